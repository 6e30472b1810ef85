"""The features' fingerprint (the ``extractor`` attribute of a ``features.h5``): every setting
and the weights' digests under one version number, and the one compatibility step that keeps
the files written before the version (their fingerprints are pinned below as the old code
wrote them)."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from keynet.pipeline import hloc_io
from keynet.pipeline.config import (EXTRACT_DEFAULTS, FINGERPRINT_VERSION, FeatureConfig, accepts_fingerprint,
                                    fingerprint_version, legacy_fingerprint)
from keynet.pipeline.extraction import Features
from keynet.pipeline.stages import extract_features, features_fingerprint, match_pairs, write_features_h5

#: Fingerprints as the code of before the version wrote them (written by that code, kept as text).
OLD_DEFAULT = ('{"descriptor": "default", "detector": "default", "max_image_size": 1600, "nms_size": 15, '
               '"num_points": 8000, "orientation": "none", "subpixel": true}')
OLD_EXTRACT = ('{"descriptor": "default", "detector": "default", "max_image_size": 0, "nms_size": 15, '
               '"num_points": 1500, "orientation": "none", "subpixel": false}')
OLD_ORIENTED = ('{"descriptor": "default", "detector": "default", "max_image_size": 1600, "nms_size": 15, '
                '"num_points": 8000, "orientation": "learned", "rotation_turns": 8, "subpixel": true}')
OLD_SHAPED = ('{"affine": "moments", "descriptor": "default", "detector": "default", "max_image_size": 1600, '
              '"nms_size": 15, "num_points": 8000, "orientation": "learned", "rotation_average": false, '
              '"subpixel": true}')
OLD_PYRAMID = ('{"border_size": 10, "descriptor": "default", "detector": "default", "max_image_size": 1600, '
               '"nms_size": 15, "num_points": 8000, "orientation": "none", "pyramid_levels": 2, "subpixel": true}')
#: The settings of each, today: their 'default' HardNet is the file now named 'imagenet'.
IMAGENET = "imagenet"
OLD = [(FeatureConfig(descriptor=IMAGENET), OLD_DEFAULT),
       (dataclasses.replace(EXTRACT_DEFAULTS, descriptor=IMAGENET), OLD_EXTRACT),
       (FeatureConfig(orientation="learned", descriptor=IMAGENET), OLD_ORIENTED),
       (FeatureConfig(affine="moments", orientation="learned", rotation_average=False, descriptor=IMAGENET), OLD_SHAPED),
       (FeatureConfig(pyramid_levels=2, border_size=10, descriptor=IMAGENET), OLD_PYRAMID)]


def test_every_setting_is_recorded_with_the_version():
    fp = json.loads(FeatureConfig().fingerprint())
    fields = {f.name for f in dataclasses.fields(FeatureConfig)} - {"device"}
    assert set(fp) == fields | {"weights", "version"}
    assert fp["version"] == FINGERPRINT_VERSION == fingerprint_version(FeatureConfig().fingerprint())
    # the settings at the values they had before they were options are recorded too
    assert fp["affine"] == "none" and fp["rotation_average"] is False and fp["pyramid_levels"] == 5
    assert set(fp["weights"]) == {"detector", "descriptor"}  # no network for 'none' orientation / affine
    assert set(json.loads(FeatureConfig(orientation="gradient", affine="moments").fingerprint())["weights"]) == \
        {"detector", "descriptor"}
    assert set(json.loads(FeatureConfig(orientation="learned", affine="learned").fingerprint())["weights"]) == \
        {"detector", "descriptor", "orientation", "affine"}
    assert "descriptor" not in json.loads(FeatureConfig(descriptor="none").fingerprint())["weights"]
    # each shipped name is recorded as the name, with its own file's digest
    digest = {a: json.loads(FeatureConfig(affine=a).fingerprint())["weights"]["affine"] for a in ("learned", "learned-imagenet")}
    assert digest["learned"] != digest["learned-imagenet"] and "missing" not in digest.values()
    assert json.loads(FeatureConfig(affine="learned-imagenet").fingerprint())["affine"] == "learned-imagenet"
    for old in (OLD_DEFAULT, "fake", "", None, "[1]"):
        assert fingerprint_version(old) is None


@pytest.mark.parametrize("cfg, old", OLD)
def test_a_fingerprint_of_before_the_version_is_accepted_through_the_compatibility_step(cfg, old):
    fp = cfg.fingerprint()
    assert old != fp and legacy_fingerprint(cfg) == old
    assert accepts_fingerprint(old, fp, legacy_fingerprint(cfg))
    assert accepts_fingerprint(None, fp) and accepts_fingerprint(fp, fp, legacy_fingerprint(cfg))
    other = dataclasses.replace(cfg, num_points=cfg.num_points + 1)
    assert not accepts_fingerprint(old, other.fingerprint(), legacy_fingerprint(other))  # other settings
    assert not accepts_fingerprint(old, fp)  # no compatibility step asked for


@pytest.mark.parametrize("cfg, old", OLD)
def test_a_fingerprint_of_before_the_version_is_not_taken_for_todays_default_descriptor(cfg, old):
    """Before the version, 'default' named the ImageNet-only HardNet; today's default is another
    file, so those caches serve `--descriptor imagenet` and never the default."""
    today = dataclasses.replace(cfg, descriptor="default")
    assert not accepts_fingerprint(old, today.fingerprint(), legacy_fingerprint(today))
    assert json.loads(legacy_fingerprint(cfg))["descriptor"] == "default"
    path = dataclasses.replace(cfg, descriptor="pretrained_nets/hardnet_imagenet.pt")  # not a name then
    assert not accepts_fingerprint(old, path.fingerprint(), legacy_fingerprint(path))


@pytest.mark.parametrize("affine", ["learned", "learned-imagenet"])
def test_a_fingerprint_of_before_the_version_serves_no_affnet_now(affine):
    """The 'learned' AffNet changed while unversioned fingerprints were written (and again
    since): such a cache is never taken for a shipped AffNet today."""
    old = OLD_SHAPED.replace('"affine": "moments"', '"affine": "learned"')
    then = FeatureConfig(affine="learned", orientation="learned", rotation_average=False, descriptor=IMAGENET)
    assert json.loads(legacy_fingerprint(then))["affine"] != "learned"  # 'learned' is no longer what it was
    now = dataclasses.replace(then, affine=affine)
    assert not accepts_fingerprint(old, now.fingerprint(), legacy_fingerprint(now))
    moments = dataclasses.replace(then, affine="moments")  # no network: still served
    assert accepts_fingerprint(OLD_SHAPED, moments.fingerprint(), legacy_fingerprint(moments))


def test_a_versioned_fingerprint_is_never_read_the_old_way():
    cfg = FeatureConfig()
    stored = json.dumps({**json.loads(legacy_fingerprint(cfg)), "version": FINGERPRINT_VERSION}, sort_keys=True)
    assert not accepts_fingerprint(stored, cfg.fingerprint(), stored)


def test_a_changed_weights_file_changes_the_fingerprint(tmp_path):
    w = tmp_path / "hardnet.pt"
    w.write_bytes(b"first weights")
    for field in ("descriptor", "detector", "orientation", "affine"):
        cfg = FeatureConfig(**{field: str(w)})
        before = json.loads(cfg.fingerprint())
        assert before[field] == str(w.resolve())
        w.write_bytes(b"other weights, longer")
        after = json.loads(cfg.fingerprint())
        assert after["weights"][field] != before["weights"][field]
        same_size = b"x" * len(w.read_bytes())
        w.write_bytes(same_size)
        os.utime(w, ns=(1, 1))  # the same size: the modification time tells the change
        assert json.loads(cfg.fingerprint())["weights"][field] != after["weights"][field]
        w.write_bytes(b"first weights")
    # a shipped name is recorded as the name, its file by digest
    fp = json.loads(FeatureConfig().fingerprint())
    assert fp["descriptor"] == "default" and fp["detector"] == "default"
    missing = json.loads(FeatureConfig(descriptor=str(tmp_path / "absent.pt")).fingerprint())
    assert missing["weights"]["descriptor"] == "missing"


def _old_cache(path, fingerprint, names=("a.png", "b.png"), n=40):
    g = np.random.default_rng(0)
    with hloc_io.open_h5(path, "a") as fd:
        fd.attrs["extractor"] = fingerprint
        for name in names:
            d = g.normal(size=(n, 128)).astype(np.float32)
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            k = np.column_stack([g.uniform(0, 100, (n, 2)), np.ones(n), np.ones(n)])
            hloc_io.write_features(fd, name, k, d, (100, 100))


def test_the_feature_stage_reuses_a_file_of_before_the_version_and_keeps_its_fingerprint(tmp_path):
    """An old ``features.h5`` of the same settings is reused (nothing computed, so no network
    is loaded) with its fingerprint, and the matches computed from it are reused in turn."""
    h5 = tmp_path / "features.h5"
    _old_cache(h5, OLD_DEFAULT)
    s = extract_features(tmp_path, ["a.png", "b.png"], h5, FeatureConfig(descriptor=IMAGENET), progress=False)
    assert sorted(s.reused) == ["a.png", "b.png"] and not s.done
    with hloc_io.open_h5(h5, "r") as fd:
        assert fd.attrs["extractor"] == OLD_DEFAULT
    m = match_pairs([("a.png", "b.png")], h5, tmp_path / "matches.h5", progress=False)
    assert m.done and not m.reused
    assert extract_features(tmp_path, ["a.png", "b.png"], h5, FeatureConfig(descriptor=IMAGENET), progress=False).reused
    m = match_pairs([("a.png", "b.png")], h5, tmp_path / "matches.h5", progress=False)
    assert m.reused and not m.done
    # with views, the old layout plus the view set
    views = json.loads(features_fingerprint(FeatureConfig(descriptor=IMAGENET), "auto", legacy=True))
    assert {k: v for k, v in views.items() if k != "views"} == json.loads(OLD_DEFAULT)


@pytest.mark.parametrize("cfg", [FeatureConfig(num_points=10), FeatureConfig()], ids=["other settings", "default now"])
def test_the_feature_stage_starts_a_file_of_other_settings_again(tmp_path, cfg):
    """Other settings, or today's default HardNet (not the file an old cache's 'default' was)."""
    h5 = tmp_path / "features.h5"
    _old_cache(h5, OLD_DEFAULT)
    done = []

    def compute(path):
        done.append(path.name)
        return Features(np.zeros((3, 4)), np.zeros((3, 128), np.float32), image_size=(10, 10)), None

    run = write_features_h5(h5, [("a.png", tmp_path / "a.png")], compute, fingerprint=cfg.fingerprint(),
                            legacy=legacy_fingerprint(cfg), progress=False)
    assert done == ["a.png"] and run.written == ["a.png"]
    with hloc_io.open_h5(h5, "r") as fd:
        assert hloc_io.complete_names(fd) == ["a.png"] and fd.attrs["extractor"] == cfg.fingerprint()
