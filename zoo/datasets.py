"""The real samples of ``../shared/data`` that train the shipped models and the ones held out of them.

One place names every file, its licence and attribution (copied from
``../shared/data/SOURCES.md``), and how it is split, so that the zoo
(:mod:`train_zoo`) and the benchmarks (``benchmarks/time_to_quality.py``,
``benchmarks/peers.py``) agree on what was seen in training and what was not.

Held out of every shipped model (benchmarks report on these):

* MRI: the UIH uMR770 3D T1 (a real single-subject scan), brought to 1 mm
  isotropic by 2 x 2 in-plane block means (it is acquired at about 1 mm and
  reconstructed at 0.5 mm in-plane);
* MRI 2D thick slices: the Siemens 2D sagittal T1 series (DICOM, 4 mm slices every 4.8 mm);
* Sentinel-2: the DSen2 crop of tile T33UUB (2017, native 10/20 m; the zoo
  trains on tile 29RKH, 2020);
* NAIP: the right half of the scene (the zoo trains on the left half).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

MNI = SHARED / "nifti/nilearn/nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
FORREST = SHARED / "nifti/datalad_example-dicom-structural_studyforrest_T1w/nifti_dcm2niix/anat-T1w_401.nii.gz"
UIH = SHARED / "nifti/dcm_qa_uih_uMR770_t1_gre_fsp_3d_sag/nifti_dcm2niix/t1_gre_fsp_3d_sag_2.nii.gz"
MR_THICK_DICOM = SHARED / "dicom/mr_t1_2d_sag_thick_dcm_qa_decubitus_HFS/In/HFS/3_t1_fl2d_sag"
S2_29RKH = SHARED / "geotiff/sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds"
S2_DSEN2 = SHARED / "geotiff/sentinel2_l1c_native_10m20m60m_DSen2_T33UUB/S2A_MSIL1C_20170527_T33UUB.mat"
NAIP = SHARED / "geotiff/naip_4band_m_4709963_se_14_1_20180716_opengeos-data/m_4709963_se_14_1_20180716.tif"

#: Provenance of each sample (from ../shared/data/SOURCES.md): what a model card records.
SOURCES: dict[str, dict[str, str]] = {
    "mni": {
        "file": "nifti/nilearn/nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "origin": "github.com/nilearn/nilearn @ 59fffa24b81712132c78549c242f68d0f3db8a67",
        "licence": "nilearn BSD-3-Clause; template: permission to use, copy, modify and distribute provided the copyright notice appears in all copies",
        "attribution": "ICBM 2009a nonlinear symmetric T1 template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University",
        "what": "MR T1 template (average of 152 subjects), 197x233x189 at 1 mm",
    },
    "forrest": {
        "file": "nifti/datalad_example-dicom-structural_studyforrest_T1w/nifti_dcm2niix/anat-T1w_401.nii.gz",
        "origin": "github.com/datalad/example-dicom-structural @ f077bcc8d502ce8155507bd758cb3b7ccc887f40 (converted with dcm2niix v1.0.20260724)",
        "licence": "Open Data Commons Public Domain Dedication and Licence (PDDL)",
        "attribution": "studyforrest subject 02: Hanke, M. et al. (2014) A high-resolution 7-Tesla fMRI dataset from complex natural stimulation with an audio movie. Scientific Data 1:140003",
        "what": "real single-subject 3D T1 (defaced), 274x384x384 at 0.70x0.67x0.67 mm",
    },
    "uih": {
        "file": "nifti/dcm_qa_uih_uMR770_t1_gre_fsp_3d_sag/nifti_dcm2niix/t1_gre_fsp_3d_sag_2.nii.gz",
        "origin": "github.com/neurolabusc/dcm_qa_uih @ d729bdd785d37ad5f1ed479c305a76f370d8011b",
        "licence": "BSD-2-Clause (repository), images described as open source",
        "attribution": "acquired by Shan C Young of United Imaging Healthcare; Copyright (c) 2018 Chris Rorden",
        "what": "real single-subject 3D T1, UIH uMR770 3 T, 160x460x512 at 1x0.5x0.5 mm",
    },
    "s2_29rkh": {
        "file": "geotiff/sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds/B*.tif",
        "origin": "github.com/cogeotiff/rio-tiler-pds @ f8b93f3b9cbe2d94271f36d43a8878953aec2682",
        "licence": "Copernicus Sentinel data, free and open; repository BSD-3-Clause (Copyright 2017 Mapbox)",
        "attribution": "Contains modified Copernicus Sentinel data 2020",
        "what": "Sentinel-2A L2A tile 29RKH, 2020-02-19, bands decimated 10x (100/200/600 m)",
    },
    "s2_dsen2": {
        "file": "geotiff/sentinel2_l1c_native_10m20m60m_DSen2_T33UUB/S2A_MSIL1C_20170527_T33UUB.mat",
        "origin": "github.com/lanha/DSen2 @ 38d7209d38a298d5d4c4856e02d5dcefa94a192a",
        "licence": "CC BY 4.0 (data)",
        "attribution": "Copyright European Commission (Copernicus), ESA",
        "what": "Sentinel-2A L1C crop of tile T33UUB, 2017-05-27, native 10/20 m",
    },
    "naip": {
        "file": "geotiff/naip_4band_m_4709963_se_14_1_20180716_opengeos-data/m_4709963_se_14_1_20180716.tif",
        "origin": "github.com/opengeos/data @ 6d9ff544d3adcf4d87bcd694068f4b510a0fdf27",
        "licence": "NAIP imagery: USDA FSA, public domain; repository MIT (Copyright 2020 Qiusheng Wu)",
        "attribution": "USDA Farm Service Agency, National Agriculture Imagery Program (NAIP) 2018",
        "what": "NAIP 4-band (R, G, B, NIR) aerial scene, 934x724 at 5 m (resampled from ~1 m)",
    },
}


def need(path: Path) -> Path:
    """``path``, or exit with a clear message when ../shared/data is missing."""
    if not path.exists():
        sys.exit(f"{path}: not found; these scripts read the shared data folder {SHARED} next to the repository")
    return path


def crop(img: Any, start: list[int], stop: list[int]) -> Any:
    """A sub-grid of a volume or raster, with its geometry (:func:`medsat_sr.evaluate.crop_image`)."""
    from medsat_sr.evaluate import crop_image

    return crop_image(img, start, stop)


def read(path: Path) -> Any:
    """A volume or raster read by medsat_sr."""
    from medsat_sr.io import read as io_read

    return io_read(need(path))


def forrest_split() -> tuple[Any, Any]:
    """studyforrest: the first 60 % of the L-R axis for training, a central block of the rest for validation."""
    img = read(FORREST)
    n0 = int(img.shape[1])
    cut = int(n0 * 0.6)
    train = crop(img, [0, 0, 0], [cut, img.shape[2], img.shape[3]])
    val = crop(img, [cut, 64, 64], [n0, 320, 320])
    return train, val


def uih_1mm() -> Any:
    """The held-out UIH T1 at 1 mm isotropic: 2 x 2 in-plane block means of the 0.5 mm reconstruction."""
    import torch

    from medsat_sr.image import make_volume

    img = read(UIH)
    x = img.as_tensor().float()
    c, a, b, d = x.shape
    x = x[:, :, : b // 2 * 2, : d // 2 * 2].reshape(c, a, b // 2, 2, d // 2, 2).mean(dim=(3, 5))
    aff = np.asarray(img.affine, dtype=np.float64).copy()
    # block centre: origin moves by half a fine voxel along the two in-plane axes
    for ax in (1, 2):
        aff[:3, 3] += aff[:3, ax] * 0.5
        aff[:3, ax] *= 2.0
    return make_volume(torch.as_tensor(x), aff, source_dtype="float32", source_path=str(UIH))


def naip_halves() -> tuple[Any, Any]:
    """NAIP: the left half (zoo training) and the right half (held out)."""
    img = read(NAIP)
    h, w = int(img.shape[1]), int(img.shape[2])
    half = w // 2 // 2 * 2
    return crop(img, [0, 0], [h, half]), crop(img, [0, half], [h, w // 2 * 2])


def s2_dsen2() -> tuple[np.ndarray, np.ndarray]:
    """The held-out DSen2 crop: ``im10`` (B04, B03, B02, B08; 600 x 600) and ``im20`` (6 bands, 300 x 300), reflectance."""
    import h5py

    with h5py.File(need(S2_DSEN2), "r") as f:
        im10 = np.swapaxes(np.asarray(f["im10"], dtype=np.float32), 1, 2) / 10000.0
        im20 = np.swapaxes(np.asarray(f["im20"], dtype=np.float32), 1, 2) / 10000.0
    return np.ascontiguousarray(im10), np.ascontiguousarray(im20)
