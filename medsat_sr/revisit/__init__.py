"""Revisit stacks: several passes of one scene fused into one sharper, cloud-free raster.

Modules (lowest layer first; see ``tests/test_layering.py``):

* :mod:`~medsat_sr.revisit.masks`: per-frame quality masks (Fmask, Landsat
  QA_PIXEL bits, Sentinel-2 SCL, PROBA-V QM, nodata) decoded to "clear".
* :mod:`~medsat_sr.revisit.register`: sub-pixel shifts between frames
  (phase correlation refined by masked Lucas-Kanade) and warping.
* :mod:`~medsat_sr.revisit.classical`: the classical fusions: best clear
  frame upscaled by cubic, masked median, shift-and-add.
* :mod:`~medsat_sr.revisit.network`: the learned fusion (per-frame encoder,
  masked attention over any number of frames, residual decoder).
* :mod:`~medsat_sr.revisit.frames`: reading frames, masks and dates from
  files, frame folders and folders of dates; the date window.
* :mod:`~medsat_sr.revisit.fuse`: one entry point, :func:`fuse`, for every
  method, tiled; :mod:`~medsat_sr.revisit.weights`: the shipped weights.
* :mod:`~medsat_sr.revisit.simulate` and :mod:`~medsat_sr.revisit.train`:
  simulated revisits of real high-resolution scenes, and the training that
  produced the shipped weights.

The upscale route built on them is :mod:`medsat_sr.inference.route_revisit`; its options
are :class:`medsat_sr.revisit.options.RevisitOptions` (the ``revisit:`` section of a job config),
and :mod:`~medsat_sr.revisit.check` scores the learned fusion against the classical ones on a
simulated revisit of the input's own scene.
"""
