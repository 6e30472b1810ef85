"""The base layer shared by the Key.Net detector (``keynet``) and the HardNet descriptor
(``hardnet``): image reading, files and atomic writes, homography geometry, dataset caches,
augmentation, CPU convolution primitives, the training skeleton and CLI helpers. It imports
neither ``keynet`` nor ``hardnet``."""
