"""Pan-sharpening: a sharper pan band guides the MS bands to the pan grid (issue #17).

* :mod:`~medsat_sr.pansharpen.grid`: pan/MS grid relation (ratio, phase), MTF-matched low-pass, decimation, cubic;
* :mod:`~medsat_sr.pansharpen.classical`: weighted Brovey, GIHS, GSA, MTF-GLP-HPM;
* :mod:`~medsat_sr.pansharpen.sensors`: which band is pan, MTF gains, fill values (from domains/*.yaml);
* :mod:`~medsat_sr.pansharpen.learned`: the self-supervised network (layer 2).

The quality indices are in :mod:`medsat_sr.pansharpen_metrics`; the route in
:mod:`medsat_sr.inference.route_pansharpen`.
"""
