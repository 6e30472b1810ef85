"""The command-line programs, one module each with ``main(argv) -> exit code``: reached as
``keynet <command>`` (:mod:`keynet.cli`) and as the original top-level scripts, which are
thin wrappers of these modules."""
