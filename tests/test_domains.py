"""Tests of medsat_sr.domains: built-in profiles, loading, validation, helpers."""

from __future__ import annotations

import copy
import doctest
import math
from pathlib import Path

import pytest
import yaml

import medsat_sr.domains
from medsat_sr._resources import data_dir
from medsat_sr.domains import DomainProfile, band_sort_key, list_domains, load_domain, profile_for
from medsat_sr.errors import ConfigError
from medsat_sr.image import Key
from medsat_sr.io import dicom, geotiff, nifti

REQUIRED = ["ct", "mri", "sentinel2_l2a", "sentinel2_l1c", "landsat8_9", "rgbn_aerial"]

# Per-band MTF gains at Nyquist of Sentinel-2 used by SupReME / S2Sharp.
S2_MTF = {
    "B01": 0.32, "B02": 0.26, "B03": 0.28, "B04": 0.24, "B05": 0.38, "B06": 0.34,
    "B07": 0.34, "B08": 0.26, "B8A": 0.33, "B09": 0.26, "B11": 0.22, "B12": 0.23,
}  # fmt: skip


def raw(name: str) -> dict:
    """The raw YAML mapping of a built-in profile (a fresh copy)."""
    return yaml.safe_load((data_dir("domains") / f"{name}.yaml").read_text())


def test_required_profiles_are_built_in():
    names = list_domains()
    for name in REQUIRED:
        assert name in names
    assert "multiband" in names


@pytest.mark.parametrize("name", list_domains())
def test_every_builtin_profile_loads_and_is_consistent(name):
    p = load_domain(name)
    assert isinstance(p, DomainProfile)
    assert p.name == name
    assert p.modality and p.units
    if p.kind == "volume":
        assert p.bands is None and not p.band_groups
    else:
        assert p.channels is None
        assert p.degradation.model == "psf"
        if p.bands is not None:  # every band has an MTF (or the profile has one value)
            for b in p.band_names:
                assert 0 < p.mtf_nyquist(b) < 1
                assert p.psf_sigma(2, band=b) > 0
    # the data range policy matches the normalisation
    if p.metrics.data_range == "window":
        assert p.normalisation.method == "hu_window"
    # JSON round trip of the validated model
    again = DomainProfile.model_validate(p.model_dump(mode="json"))
    assert again == p


def test_builtin_yaml_has_no_python_tags():
    for path in data_dir("domains").glob("*.yaml"):
        assert "!!python" not in path.read_text()


def test_ct_profile_values():
    ct = load_domain("ct")
    assert ct.kind == "volume"
    assert ct.normalisation.method == "hu_window"
    assert (ct.normalisation.min, ct.normalisation.max) == (-1024.0, 3071.0)
    assert ct.metrics.data_range == "window"
    assert ct.metrics.mask.kind == "foreground" and ct.metrics.mask.units == "physical"
    assert ct.degradation.slice_profile.fwhm == "thickness"


def test_mri_profile_values():
    mr = load_domain("mri")
    assert mr.normalisation.method == "percentile"
    assert (mr.normalisation.low, mr.normalisation.high) == (0.5, 99.5)
    assert mr.normalisation.mask == "nonzero"
    assert mr.degradation.model == "slice_profile"
    assert mr.degradation.slice_profile.shape == "gaussian"
    assert mr.degradation.noise.model == "rician"
    # isotropic PSF: FWHM of one low-resolution voxel = 2 input voxels at x2
    assert mr.psf_sigma(2) == pytest.approx(2.0 / (2.0 * math.sqrt(2.0 * math.log(2.0))))


def test_sentinel2_l2a_bands_groups_and_mtf():
    s2 = load_domain("sentinel2_l2a")
    assert s2.band_names == [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B11",
        "B12",
    ]
    assert s2.expand_bands(["10m"]) == ["B02", "B03", "B04", "B08"]
    assert s2.expand_bands(["20m"]) == ["B05", "B06", "B07", "B8A", "B11", "B12"]
    assert s2.expand_bands(["60m", "B02"]) == ["B01", "B09", "B02"]
    assert [g.name for g in s2.groups("guide")] == ["10m"]
    assert [g.name for g in s2.groups("target")] == ["20m", "60m"]
    assert (
        s2.resolution_of(["20m"]) == 20
        and s2.resolution_of(["10m"]) == 10
        and s2.resolution_of(["60m"]) == 60
    )
    for band, gain in S2_MTF.items():
        assert s2.mtf_nyquist(band) == gain
    assert s2.nodata == 0
    assert s2.metrics.ergas_ratio == "inverse_scale"
    assert s2.metrics.per_band and s2.metrics.mask.kind == "valid"
    with pytest.raises(ConfigError, match="did you mean '10m'"):
        s2.expand_bands(["10n"])
    with pytest.raises(ConfigError, match="different resolutions"):
        s2.resolution_of(["10m", "20m"])


@pytest.mark.parametrize("scale", [2, 3, 6])
@pytest.mark.parametrize("band", ["B05", "B11", "B01"])
def test_psf_sigma_reproduces_the_mtf_gain_at_nyquist(scale, band):
    s2 = load_domain("sentinel2_l2a")
    sigma = s2.psf_sigma(scale, band=band)
    nyquist = 1.0 / (2.0 * scale)  # cycles per high-resolution pixel
    gain = math.exp(-2.0 * math.pi**2 * sigma**2 * nyquist**2)  # MTF of a Gaussian PSF
    assert gain == pytest.approx(S2_MTF[band], rel=1e-12)


def test_sentinel2_reflectance_offset_depends_on_processing_baseline():
    for name in ("sentinel2_l2a", "sentinel2_l1c"):
        norm = load_domain(name).normalisation
        assert norm.method == "reflectance"
        assert norm.scale == pytest.approx(1e-4)
        assert norm.scale_offset() == (pytest.approx(1e-4), 0.0)  # unknown baseline
        assert norm.scale_offset("02.14") == (pytest.approx(1e-4), 0.0)
        assert norm.scale_offset("03.01") == (pytest.approx(1e-4), 0.0)
        assert norm.scale_offset("04.00") == (pytest.approx(1e-4), pytest.approx(-0.1))
        assert norm.scale_offset("N0509") == (pytest.approx(1e-4), pytest.approx(-0.1))
        # DN 1000 at baseline >= 04.00 is zero reflectance
        scale, offset = norm.scale_offset("05.10")
        assert 1000 * scale + offset == pytest.approx(0.0, abs=1e-12)
        with pytest.raises(ConfigError, match="processing baseline"):
            norm.scale_offset("latest")


def test_l1c_has_the_cirrus_band_and_l2a_does_not():
    assert "B10" in load_domain("sentinel2_l1c").band_names
    assert "B10" not in load_domain("sentinel2_l2a").band_names


def test_landsat_aerial_and_multiband_scaling():
    ls = load_domain("landsat8_9")
    assert ls.normalisation.scale_offset() == (pytest.approx(2.75e-5), pytest.approx(-0.2))
    assert all(ls.band(b).resolution == 30 for b in ls.band_names)
    naip = load_domain("rgbn_aerial")
    assert naip.band_names == ["red", "green", "blue", "nir"]
    assert naip.normalisation.scale_offset() == (pytest.approx(1 / 255), 0.0)
    assert naip.metrics.data_range == "fixed" and naip.metrics.data_range_value == 255.0  # 8-bit, values as read
    mb = load_domain("multiband")
    assert mb.band_names is None and mb.kind == "raster"
    assert mb.expand_bands(["anything"]) == ["anything"]  # any band names


def test_linear_dtype_scale():
    d = raw("rgbn_aerial")
    d["normalisation"]["scale"] = "dtype"
    p = load_domain(d)
    assert p.normalisation.scale_offset("uint8") == (pytest.approx(1 / 255), 0.0)
    assert p.normalisation.scale_offset("uint16") == (pytest.approx(1 / 65535), 0.0)
    assert p.normalisation.scale_offset("float32") == (1.0, 0.0)


def test_load_by_path_and_relative_to_a_base_dir(tmp_path):
    d = raw("mri")
    d["name"] = "my_mri"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "my_mri.yaml").write_text(yaml.safe_dump(d))
    assert load_domain(tmp_path / "sub" / "my_mri.yaml").name == "my_mri"
    assert load_domain(str(tmp_path / "sub" / "my_mri.yaml")).name == "my_mri"
    assert load_domain("sub/my_mri.yaml", base_dir=tmp_path).name == "my_mri"


def test_load_from_mapping_and_profile():
    p = load_domain(raw("ct"))
    assert p.name == "ct"
    q = load_domain(p)
    assert q == p and q is not p


def test_unknown_name_lists_the_available_profiles():
    with pytest.raises(ConfigError) as info:
        load_domain("sentinel2")
    msg = str(info.value)
    assert "did you mean 'sentinel2_l2a'" in msg
    for name in REQUIRED:
        assert name in msg


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_domain(tmp_path / "nope.yaml")


def test_typo_gives_location_and_hint():
    d = raw("sentinel2_l2a")
    d["degradation"]["psf"]["mtf_nyqist"] = 0.3
    d["bands"][0]["resolutoin"] = 60
    with pytest.raises(ConfigError) as info:
        load_domain(d)
    msg = str(info.value)
    assert "degradation.psf.mtf_nyqist: unknown key; did you mean 'mtf_nyquist'?" in msg
    assert "bands.0.resolutoin: unknown key; did you mean 'resolution'?" in msg
    assert msg.count("mtf_nyqist") == 1  # reported once, not also by pydantic


def test_unknown_key_without_a_close_match_lists_valid_keys():
    d = raw("ct")
    d["zzz"] = 1
    with pytest.raises(ConfigError, match=r"zzz: unknown key; valid keys: .*normalisation"):
        load_domain(d)


def test_python_tag_in_a_profile_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.yaml"
    path.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nkind: volume\n')
    with pytest.raises(ConfigError, match="not plain data"):
        load_domain(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["normalisation"].update(min=100, max=0), "normalisation.max: must be greater than min"),
        (lambda d: d.update(bands=[{"name": "x"}]), "bands: a volume profile lists channels"),
        (
            lambda d: d["metrics"].update(data_range="percentile"),
            "'percentile' needs percentile normalisation",
        ),
        (lambda d: d["degradation"]["psf"].update(mtf_nyquist=0.3), "give either mtf_nyquist or fwhm"),
        (
            lambda d: d["degradation"]["psf"].update(fwhm=-1),
            "degradation.psf.fwhm: Input should be greater than 0",
        ),
        (lambda d: d["degradation"]["noise"].update(model="poisson"), "degradation.noise.model"),
        (lambda d: d["metrics"]["mask"].update(threshold=None), "a foreground mask needs a threshold"),
        (lambda d: d["metrics"]["ssim"].update(win_size=8), "must be odd"),
        (lambda d: d.update(kind="image"), "kind: Input should be 'volume' or 'raster'"),
        (lambda d: d.pop("degradation"), "degradation: required key is missing"),
    ],
)
def test_ct_profile_errors(mutate, match):
    d = raw("ct")
    mutate(d)
    with pytest.raises(ConfigError, match=match):
        load_domain(d)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["band_groups"][0]["bands"].append("B99"), "unknown band 'B99'"),
        (lambda d: d["band_groups"][1]["bands"].append("B02"), "already in group '10m'"),
        (
            lambda d: d["band_groups"].append({"name": "mix", "bands": ["B01"], "role": "target"}),
            "already in group",
        ),
        (lambda d: d["degradation"]["psf"]["mtf_nyquist"].update(B13=0.3), "mtf_nyquist.B13: not a band"),
        (
            lambda d: d["degradation"]["psf"]["mtf_nyquist"].update(B05=1.5),
            r"entry 'B05' must be a gain in \(0, 1\)",
        ),
        (lambda d: d["degradation"].update(model="slice_profile"), "rasters use the 'psf' model"),
        (lambda d: d["bands"].append(dict(d["bands"][0])), r"duplicate names \['B01'\]"),
        (lambda d: d["normalisation"].update(scale="1/0"), "fraction"),
        (lambda d: d["normalisation"].update(scale=True), "expected a number"),
        (lambda d: d["normalisation"]["baseline_offsets"][0].update(from_baseline="4"), "from_baseline"),
    ],
)
def test_raster_profile_errors(mutate, match):
    d = raw("sentinel2_l2a")
    mutate(d)
    with pytest.raises(ConfigError, match=match):
        load_domain(d)


def test_fraction_strings_are_parsed():
    d = raw("sentinel2_l2a")
    d["normalisation"]["scale"] = "1 / 10000"
    assert load_domain(d).normalisation.scale == pytest.approx(1e-4)


def test_box_psf_has_no_sigma():
    d = raw("multiband")
    d["degradation"]["psf"] = {"shape": "box"}
    p = load_domain(d)
    with pytest.raises(ConfigError, match="no sigma"):
        p.psf_sigma(2)
    d["degradation"]["psf"] = {"shape": "box", "mtf_nyquist": 0.3}
    with pytest.raises(ConfigError, match="has no width"):
        load_domain(d)


def test_builtin_name_must_match_file(tmp_path, monkeypatch):
    folder = tmp_path / "domains"
    folder.mkdir()
    d = copy.deepcopy(raw("ct"))
    d["name"] = "other"
    (folder / "ct.yaml").write_text(yaml.safe_dump(d))
    monkeypatch.setattr("medsat_sr._resources.data_dir", lambda kind: folder)
    with pytest.raises(ConfigError, match="does not match its file name"):
        load_domain("ct")


def test_docstring_examples():
    result = doctest.testmod(medsat_sr.domains)
    assert result.failed == 0 and result.attempted > 0


def test_data_dir_is_the_checkout_or_the_installed_copy():
    folder = data_dir("domains")
    assert folder.is_dir()
    assert {p.stem for p in folder.glob("*.yaml")} >= set(REQUIRED)
    root = Path(medsat_sr.domains.__file__).resolve().parent
    assert folder in (root.parent / "domains", root / "_data" / "domains")


# ---------------------------------------------------------------- baseline
@pytest.mark.parametrize("name", list_domains())
def test_every_builtin_profile_names_its_baseline(name):
    data = raw(name)
    assert "baseline" in data, f"domains/{name}.yaml sets no baseline"
    p = load_domain(name)
    assert p.baseline == ("bspline" if p.kind == "volume" else "gdal_cubic")


def test_baseline_defaults_by_kind_and_must_fit_the_kind():
    ct = raw("ct")
    del ct["baseline"]
    assert load_domain(ct).baseline == "bspline"
    s2 = raw("sentinel2_l2a")
    s2["baseline"] = None
    assert load_domain(s2).baseline == "gdal_cubic"
    s2["baseline"] = "gdal_lanczos"
    assert load_domain(s2).baseline == "gdal_lanczos"
    ct["baseline"] = "gdal_cubic"
    with pytest.raises(ConfigError, match=r"baseline: 'gdal_cubic' is for rasters; a volume takes one of \['bspline'\]"):
        load_domain(ct)
    ct["baseline"] = "bicubic"
    with pytest.raises(ConfigError, match="baseline"):
        load_domain(ct)


# ---------------------------------------------------------------- profile_for: volumes
CT_DICOM = "dicom/ct_head_ge_tilt_dcm_qa_ct/In/GE"
CT_UID = "1.2.826.0.1.3680043.9.4245.3115138630835728997848661150714813892"  # the folder holds 2 series
MR_DICOM = "dicom/mr_t1_enhanced_multiframe_dcm_qa_xa30_5/In"
CT_NIFTI = "nifti/TotalSegmentator/tests/reference_files/example_ct.nii.gz"
S2_L2A = "geotiff/sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds"


def test_ct_dicom_series_gets_the_ct_profile(shared_data):
    vol = dicom.read(shared_data / CT_DICOM, series=CT_UID, resample=True)  # tilted, uneven spacing: resampled
    assert vol.meta["modality"] == "CT"
    p = profile_for(vol)
    assert p.name == "ct"
    assert p.normalisation.method == "hu_window"
    assert profile_for(dict(vol.meta)).name == "ct"  # the meta alone is enough


def test_mr_dicom_series_gets_the_mri_profile(shared_data):
    vol = dicom.read(shared_data / MR_DICOM)
    assert vol.meta["modality"] == "MR"
    assert profile_for(vol).name == "mri"


def test_nifti_volume_gets_the_generic_profile_never_mri(shared_data, caplog):
    vol = nifti.read(shared_data / CT_NIFTI)  # a CT in NIfTI: no modality in the file
    assert not vol.meta.get("modality")
    with caplog.at_level("INFO", logger="medsat_sr.domains"):
        p = profile_for(vol)
    assert p.name == "generic_volume"
    assert "using the fallback profile 'generic_volume'" in caplog.text
    # modality-agnostic: no MR k-space or Rician noise, percentiles on every finite voxel
    assert p.normalisation.method == "percentile" and p.normalisation.mask == "valid"
    assert p.degradation.noise.model == "none"
    assert p.degradation.model == "slice_profile"
    assert p.baseline == "bspline"


def test_modality_matching_rules():
    assert profile_for({Key.KIND: "volume", "modality": "ct"}).name == "ct"  # case-insensitive
    assert profile_for({Key.KIND: "volume", "modality": " MR "}).name == "mri"
    assert profile_for({Key.KIND: "volume", "modality": "PT"}).name == "generic_volume"
    assert profile_for({Key.KIND: "volume", "modality": None}).name == "generic_volume"


def test_no_match_without_fallback_lists_the_profiles():
    meta = {Key.KIND: "volume", Key.SOURCE_PATH: "/data/brain.nii.gz"}
    with pytest.raises(ConfigError) as err:
        profile_for(meta, fallback=False)
    msg = str(err.value)
    assert msg.startswith("/data/brain.nii.gz: no profile matches for a volume with no modality")
    assert "ct (Modality CT)" in msg and "mri (Modality MR)" in msg and "generic_volume (fallback for volumes)" in msg
    with pytest.raises(ConfigError, match="no profile matches for a volume with DICOM Modality 'US'"):
        profile_for({Key.KIND: "volume", "modality": "US"}, profiles=["ct", "mri"])


def test_profile_for_refuses_what_it_cannot_read():
    with pytest.raises(ConfigError, match="meta 'kind' must be 'volume' or 'raster', got None"):
        profile_for({})
    with pytest.raises(ConfigError, match="needs an image .* got int"):
        profile_for(3)


def test_profile_for_returns_a_copy():
    p = profile_for({Key.KIND: "volume", "modality": "CT"})
    p.nodata = -2000
    assert profile_for({Key.KIND: "volume", "modality": "CT"}).nodata is None


# ---------------------------------------------------------------- profile_for: rasters
def test_sentinel2_band_names_match_both_levels_unless_b10_decides():
    names = ["B02", "B03", "B04", "B08"]
    with pytest.raises(ConfigError, match=r"match several raster profiles \(sentinel2_l1c, sentinel2_l2a\)"):
        profile_for({Key.KIND: "raster", Key.BAND_NAMES: names})
    assert profile_for({Key.KIND: "raster", Key.BAND_NAMES: names + ["B10"]}).name == "sentinel2_l1c"
    assert profile_for({Key.KIND: "raster", Key.BAND_NAMES: names}, profiles=["sentinel2_l2a", "multiband"]).name == (
        "sentinel2_l2a"
    )


def test_raster_band_patterns_from_yaml():
    def pick(names):
        return profile_for({Key.KIND: "raster", Key.BAND_NAMES: names}).name

    assert pick(["LC09_L2SP_016037_20230101_SR_B4", "SR_B5"]) == "landsat8_9"
    assert pick(["Red", "green", "blue", "NIR"]) == "rgbn_aerial"
    assert pick(["band1", "band2", "band3"]) == "multiband"  # no descriptions: the generic raster
    assert pick(["l8_B1"]) == "multiband"  # Landsat Level-1 DN is not the SR product
    assert pick(["B02", "SCL"]) == "multiband"  # every band must match


def test_real_sentinel2_band_folder_sorts_and_matches(shared_data):
    names = geotiff.read_bandset(shared_data / S2_L2A).band_names
    # grouped by grid (10 m, 20 m, 60 m), each group in the profiles' band order
    assert names == ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]
    assert {"B02", "B8A", "B12"} <= set(names)
    assert profile_for({Key.KIND: "raster", Key.BAND_NAMES: names}, profiles=["sentinel2_l2a", "multiband"]).name == (
        "sentinel2_l2a"
    )


def test_band_sort_key_comes_from_the_profiles():
    names = ["SCL", "B12", "b8a", "B1", "B10", "B08", "B09", "B02"]
    assert sorted(names, key=band_sort_key) == ["B1", "B02", "B08", "b8a", "B09", "B10", "B12", "SCL"]
    assert band_sort_key("B8A")[:3] == (0, 8, 1)
    assert band_sort_key("red")[:3] == (1, 0, 0)  # a pattern without a number group does not order


def test_names_no_profile_orders_sort_naturally():
    """A Landsat Level-1 folder (``l8_B1`` ... ``l8_B11``) in band order, not B1 < B10 < B11 < B2."""
    names = ["l8_B11", "l8_B2", "l8_B10", "l8_B1", "L8_b9", "red", "l8_B8"]
    assert sorted(names, key=band_sort_key) == ["l8_B1", "l8_B2", "l8_B8", "L8_b9", "l8_B10", "l8_B11", "red"]


# ---------------------------------------------------------------- match: validation
@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (["B(?P<number>\\d"], r"match\.band_patterns\.0: .*invalid regular expression 'B\(\?P<number>\\\\d': missing \)"),
        (["B(?P<num>\\d)"], r"named groups \['num'\]; expected only \['number', 'suffix'\]"),
        ([".*"], "matches an empty band name"),
    ],
)
def test_a_bad_band_pattern_is_a_clear_error(tmp_path, patterns, message):
    data = raw("sentinel2_l2a")
    data["match"] = {"band_patterns": patterns}
    path = tmp_path / "mysensor.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as err:
        load_domain(path)
    assert str(err.value).startswith(f"{path}: invalid domain profile")


def test_match_section_must_fit_the_kind():
    ct = raw("ct")
    ct["match"] = {"band_patterns": ["B\\d+"]}
    with pytest.raises(ConfigError, match="match.band_patterns: band patterns are for rasters"):
        load_domain(ct)
    s2 = raw("sentinel2_l2a")
    s2["match"] = {"modalities": ["CT"]}
    with pytest.raises(ConfigError, match="match.modalities: modalities are for volumes"):
        load_domain(s2)
    ct["match"] = {"modalities": ["CT"], "fallback": True}
    with pytest.raises(ConfigError, match="match.fallback: a fallback profile matches what no other does"):
        load_domain(ct)
    ct["match"] = {"modalities": ["ct"]}
    with pytest.raises(ConfigError, match="expected a DICOM Modality code such as 'CT'"):
        load_domain(ct)
    ct["match"] = {"modalitys": ["CT"]}
    with pytest.raises(ConfigError, match="did you mean 'modalities'"):
        load_domain(ct)


def test_each_kind_has_exactly_one_builtin_fallback():
    profiles = [load_domain(n) for n in list_domains()]
    fallbacks = {k: [p.name for p in profiles if p.kind == k and p.match.fallback] for k in ("volume", "raster")}
    assert fallbacks == {"volume": ["generic_volume"], "raster": ["multiband"]}
