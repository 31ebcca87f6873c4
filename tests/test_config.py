"""Tests of medsat_sr.config: built-in configs, validation, overrides, resolution, packaging."""

from __future__ import annotations

import doctest
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

import medsat_sr.config
import medsat_sr.config_sections
from medsat_sr._resources import data_dir
from medsat_sr.config import (
    MAX_SCALE,
    JobConfig,
    apply_overrides,
    list_configs,
    load_config,
    parse_override,
)
from medsat_sr.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

#: Names the issues ask for, each runnable as named.
REQUIRED = [
    "mri_thick_slice",
    "ct_thick_slice",
    "sentinel2_20m_to_10m",
    "multiband_x2",
    "mri_supervised_x2",
    "mri_finetune",
    "mri_isotropic_x2",
    "mri_isotropic_x2_supervised",
    "ct_isotropic_x2",
]


def write(tmp_path: Path, data: dict | str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def minimal(**extra) -> dict:
    return {"domain": "mri", "scale": "auto", "model": {"name": "edsr", "spatial_dims": 2}, **extra}


# ----------------------------------------------------------------- built-ins
def test_required_configs_are_built_in():
    names = list_configs()
    for name in REQUIRED:
        assert name in names


@pytest.mark.parametrize("name", list_configs())
def test_every_builtin_config_loads_and_keeps_the_fixed_keys(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert isinstance(cfg.data.inputs, list)
    assert cfg.train.max_iterations >= 1
    assert 0 < cfg.train.max_minutes <= 10  # modest budgets
    assert cfg.train.mode in ("supervised", "self_supervised", "finetune")
    multi = any(getattr(cfg, k, None) is not None for k in ("revisit", "multistack"))  # multi-input routes: no single-image model
    assert cfg.model.name in medsat_sr.config_sections._known_models() or (multi and cfg.model.name is None)
    assert cfg.scale == "auto" or isinstance(cfg.scale, (float, list))
    assert cfg.profile.name == cfg.domain
    # resolved() is JSON and carries the merged profile
    resolved = cfg.resolved()
    again = json.loads(json.dumps(resolved))
    assert again["domain"]["name"] == cfg.domain
    assert again["model"]["name"] == cfg.model.name or multi
    assert again["data"]["inputs"] == []
    for key in ("max_iterations", "max_minutes", "mode"):
        assert key in again["train"]
    assert len(cfg.config_hash()) == 64


def test_builtin_configs_build_their_models():
    """Each config's model section builds with the real models package."""
    models = pytest.importorskip("medsat_sr.models")
    for name in list_configs():
        cfg = load_config(name)
        if cfg.model.name is None and any(getattr(cfg, k, None) is not None for k in ("revisit", "multistack")):
            continue  # a multi-input route's config: its networks are the route's own
        kwargs = dict(cfg.model.kwargs)
        ndim = 2 if cfg.profile.kind == "raster" else 3
        scale = cfg.scale_for([1.0, 1.0, 4.0]) if cfg.scale == "auto" else cfg.scale
        if cfg.spatial_dims == 2 and ndim == 3:  # slice-wise: the two largest factors lie in the slice
            scale = sorted(scale, reverse=True)[:2]
        if cfg.model.name == "guided":
            kwargs["guide_channels"] = len(cfg.guide_bands())
        net = models.build_model(
            cfg.model.name,
            spatial_dims=cfg.spatial_dims,
            in_channels=len(cfg.target_bands() or [1]),
            scale=scale,
            **kwargs,
        )
        assert net.config["name"] == cfg.model.name


def test_thick_slice_configs_output_isotropic_at_in_plane_spacing():
    for name in ("mri_thick_slice", "ct_thick_slice"):
        cfg = load_config(name)
        assert cfg.scale == "auto"
        assert cfg.profile.degradation.model == "slice_profile"
        assert cfg.train.mode == "self_supervised"
        factors = cfg.scale_for([1.015625, 1.015625, 4.8])
        assert factors[:2] == (1.0, 1.0)
        assert 4.8 / factors[2] == pytest.approx(1.015625)


def test_sentinel2_config_is_guided_self_supervised_and_consistent():
    cfg = load_config("sentinel2_20m_to_10m")
    assert cfg.model.name == "guided" and cfg.train.mode == "self_supervised"
    assert cfg.target_bands() == ["B05", "B06", "B07", "B8A", "B11", "B12"]
    assert cfg.guide_bands() == ["B02", "B03", "B04", "B08"]
    assert cfg.scale_for() == (2.0, 2.0)


def test_isotropic_configs_use_3d_nets_and_the_psf():
    for name in ("mri_isotropic_x2", "mri_isotropic_x2_supervised", "ct_isotropic_x2"):
        cfg = load_config(name)
        assert cfg.spatial_dims == 3
        assert cfg.scale == 2.0
        assert cfg.profile.degradation.model == "psf"
        assert cfg.profile.psf_sigma(2) == pytest.approx(2 / 2.3548200450309493)
    assert load_config("mri_isotropic_x2_supervised").train.mode == "supervised"
    assert load_config("ct_isotropic_x2").profile.normalisation.method == "hu_window"


def test_finetune_config_needs_init_only_to_run():
    cfg = load_config("mri_finetune")
    assert cfg.train.mode == "finetune" and cfg.train.init is None
    with pytest.raises(ConfigError, match="--init"):
        cfg.check_runnable("train")
    cfg = load_config("mri_finetune", ["train.init=ckpt/best"])
    cfg.check_runnable("train")
    assert cfg.train.init == "ckpt/best"
    with pytest.raises(ConfigError, match="data.inputs"):
        load_config("mri_isotropic_x2_supervised").check_runnable("train")


# ----------------------------------------------------------------- name and path
def test_config_by_path_and_by_name_agree(tmp_path):
    src = data_dir("configs") / "multiband_x2.yaml"
    copy = tmp_path / "multiband_x2.yaml"
    shutil.copy(src, copy)
    by_name = load_config("multiband_x2")
    by_path = load_config(copy)
    assert by_path.source == str(copy)
    assert by_name.resolved() == by_path.resolved()
    assert by_name.config_hash() == by_path.config_hash()
    assert load_config(str(copy)).config_hash() == by_name.config_hash()


def test_name_defaults_to_the_file_stem(tmp_path):
    cfg = load_config(write(tmp_path, minimal(), "my_job.yaml"))
    assert cfg.name == "my_job"


def test_unknown_config_name_lists_the_builtins():
    with pytest.raises(ConfigError) as info:
        load_config("mri_thiick_slice")
    msg = str(info.value)
    assert "did you mean 'mri_thick_slice'" in msg
    for name in REQUIRED:
        assert name in msg


def test_relative_paths_in_a_file_are_relative_to_it(tmp_path):
    data = minimal(
        data={"inputs": ["a.nii.gz", "/abs/b.nii.gz"], "pairs": [{"lr": "lr.nii", "hr": "hr.nii"}]}
    )
    (tmp_path / "sub").mkdir()
    cfg = load_config(write(tmp_path / "sub", data), ["data.validation=[v.nii.gz]"])
    assert cfg.data.inputs == [str(tmp_path / "sub" / "a.nii.gz"), "/abs/b.nii.gz"]
    assert cfg.data.pairs[0].hr == str(tmp_path / "sub" / "hr.nii")
    assert cfg.data.validation == ["v.nii.gz"]  # --set values stay as given


def test_domain_may_be_a_profile_file(tmp_path):
    prof = yaml.safe_load((data_dir("domains") / "mri.yaml").read_text())
    prof["name"] = "my_scanner"
    write(tmp_path, prof, "my_scanner.yaml")
    cfg = load_config(write(tmp_path, minimal(domain="my_scanner.yaml")))
    assert cfg.profile.name == "my_scanner"


def test_mapping_and_jobconfig_inputs():
    cfg = load_config(minimal())
    assert cfg.source == "<config mapping>"
    again = load_config(cfg, ["train.max_iterations=7"])
    assert again.train.max_iterations == 7 and cfg.train.max_iterations != 7


# ----------------------------------------------------------------- unknown keys
def test_typo_fails_with_location_hint_and_file_name(tmp_path):
    path = write(
        tmp_path, "domain: mri\nscale: auto\nmodel: {name: edsr}\ntrain: {max_iteratons: 5}\n", "typo.yaml"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "did you mean 'max_iterations'" in msg
    assert "train.max_iteratons" in msg
    assert str(path) in msg
    assert msg.count("max_iteratons") == 1


@pytest.mark.parametrize(
    ("data", "where", "hint"),
    [
        (minimal(trian={}), "trian", "'train'"),
        (minimal(inference={"tile_szie": 64}), "inference.tile_szie", "'tile_size'"),
        (minimal(train={"losses": [{"nmae": "l1"}]}), "train.losses.0.nmae", "'name'"),
        (
            minimal(train={"schedule": {"warmup_iteration": 5}}),
            "train.schedule.warmup_iteration",
            "'warmup_iterations'",
        ),
        (minimal(degradation={"psf": {"fwmh": 1.5}}), "degradation.psf.fwmh", "'fwhm'"),
        (minimal(normalisation={"hihg": 99}), "normalisation.hihg", "'high'"),
        (minimal(metrics={"mask": {"treshold": 0.2}}), "metrics.mask.treshold", "'threshold'"),
        (minimal(normalization={"high": 99}), "normalization", "'normalisation'"),
    ],
)
def test_unknown_keys_anywhere(tmp_path, data, where, hint):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    msg = str(info.value)
    assert f"{where}: unknown key; did you mean {hint}?" in msg


def test_several_problems_are_listed_together(tmp_path):
    data = minimal(train={"max_iteratons": 5, "lr": -1}, inference={"overlap": 1.5})
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    msg = str(info.value)
    assert "3 problems" in msg
    assert "train.max_iteratons" in msg and "train.lr" in msg and "inference.overlap" in msg


# ----------------------------------------------------------------- ranges
@pytest.mark.parametrize(
    ("override", "where"),
    [
        ("train.lr=-1", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.lr=2", "train.lr"),
        ("train.max_iterations=0", "train.max_iterations"),
        ("train.max_minutes=0", "train.max_minutes"),
        ("train.max_minutes=-5", "train.max_minutes"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.patch_size=4", "train.patch_size"),
        ("train.val_every=0", "train.val_every"),
        ("train.losses=[]", "train.losses"),
        ("train.losses=[{name: l1, weight: -1}]", "train.losses.0.weight"),
        ("train.losses=[{name: l1}, {name: l1}]", "train.losses.1.name"),
        ("train.losses=[{name: l1, eps: 0.1}]", "train.losses.0.eps"),
        ("train.precision=fp16", "train.precision"),
        ("train.mode=unsupervised", "train.mode"),
        ("train.schedule.name=step", "train.schedule.step_size"),
        ("train.schedule.min_lr=1", "train.schedule.min_lr"),
        ("train.early_stopping.patience=0", "train.early_stopping.patience"),
        ("train.adversarial.weight=0", "train.adversarial.weight"),
        ("train.freeze_blocks=2", "train.freeze_blocks"),
        ("train.seed=-1", "train.seed"),
        ("inference.tile_size=0", "inference.tile_size"),
        ("inference.tile_size=[64, 0]", "inference.tile_size"),
        ("inference.overlap=1", "inference.overlap"),
        ("inference.overlap=-0.1", "inference.overlap"),
        ("inference.device=tpu", "inference.device"),
        ("inference.blend=constant", "inference.blend"),
        ("data.val_fraction=0.9", "data.val_fraction"),
        ("output.dtype=int8", "output.dtype"),
        ("output.name_template=out.tif", "output.name_template"),
        ("output.name_template={stem}/x{ext}", "output.name_template"),
        ("output.name_template={stme}{ext}", "output.name_template"),
        ("model.kwargs.scale=4", "model.kwargs"),
        ("model.name=edsrr", "model.name"),
        ("scale=1", "scale"),
        ("scale=0.5", "scale"),
        (f"scale={MAX_SCALE + 1}", "scale"),
        ("scale=[1, 1, 1]", "scale"),
        ("scale=[1, 0.5, 2]", "scale"),
        ("scale=true", "scale"),
        ("scale=big", "scale"),
        ("target_spacing=1.0", "target_spacing"),
    ],
)
def test_out_of_range_values_are_refused(override, where):
    with pytest.raises(ConfigError) as info:
        load_config("multiband_x2" if where != "target_spacing" else "mri_isotropic_x2", [override])
    msg = str(info.value)
    assert f"{where}:" in msg, msg
    assert "multiband_x2.yaml" in msg or "mri_isotropic_x2.yaml" in msg


def test_negative_lr_message():
    with pytest.raises(ConfigError, match=r"train\.lr: Input should be greater than 0, got -1"):
        load_config("mri_thick_slice", ["train.lr=-1"])


@pytest.mark.parametrize(
    ("name", "override", "match"),
    [
        ("mri_thick_slice", "scale=2", "set degradation.model: psf"),
        ("mri_thick_slice", "scale=[2, 2, 4]", "factors > 1 on several"),
        ("mri_isotropic_x2", "scale=[2, 2]", "give 3 factors"),
        ("multiband_x2", "scale=[2, 2, 2]", "give 2 factors"),
        ("multiband_x2", "model.spatial_dims=3", "rasters use 2D models"),
        ("mri_isotropic_x2", "train.patch_size=[32, 32]", "the model is 3D"),
        ("multiband_x2", "output.format=nifti", "rasters are written as geotiff"),
        ("mri_isotropic_x2", "output.cog=true", "COG is a raster output"),
        ("mri_isotropic_x2", "output.format=geotiff", "volumes are written as nifti or dicom"),
        ("mri_isotropic_x2", "model.name=guided", "guided model is for rasters"),
        ("mri_isotropic_x2", "bands.guides=[x]", "band roles are for rasters"),
        ("multiband_x2", "model.name=guided", "needs guide bands"),
        ("sentinel2_20m_to_10m", "scale=3", "scale must be 2"),
        ("sentinel2_20m_to_10m", "bands.guides=[10n]", "did you mean '10m'"),
        ("sentinel2_20m_to_10m", "bands.guides=[20m]", "also targets"),
        ("sentinel2_20m_to_10m", "model.name=edsr", "used by the 'guided' model"),
        ("mri_thick_slice", "domain=mr", "did you mean 'mri'"),
        ("mri_thick_slice", "normalisation={method: percentile, low: 50, high: 10}", "normalisation.high"),
        ("ct_isotropic_x2", "metrics.data_range=percentile", "'percentile' needs percentile normalisation"),
        ("mri_thick_slice", "train.init=x", "only used with mode 'finetune'"),
    ],
)
def test_inconsistent_settings_are_refused(name, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(name, [override])


def test_unknown_domain_lists_the_available_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, minimal(domain="xray")))
    msg = str(info.value)
    assert "domain:" in msg and "unknown domain profile 'xray'" in msg
    for name in ("ct", "mri", "sentinel2_l2a", "landsat8_9", "rgbn_aerial"):
        assert name in msg


def test_missing_required_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"domain": "mri"}))
    assert "scale: required key is missing" in str(info.value)


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "domain: [mri\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


# ----------------------------------------------------------------- no code in configs
def test_python_tag_in_a_config_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "X"
    path = write(
        tmp_path,
        f'domain: mri\nscale: 2\ntrain:\n  max_iterations: !!python/object/apply:os.system ["touch {marker}"]\n',
    )
    with pytest.raises(ConfigError, match="not plain data"):
        load_config(path)
    assert not marker.exists()


def test_python_tag_in_an_override_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "X"
    with pytest.raises(ConfigError, match="refused"):
        load_config("mri_thick_slice", [f'description=!!python/object/apply:os.system ["touch {marker}"]'])
    assert not marker.exists()


def test_other_python_tags_are_refused(tmp_path):
    for tag in ("!!python/name:os.system", "!!python/object/new:subprocess.Popen [[touch, x]]"):
        with pytest.raises(ConfigError):
            load_config(write(tmp_path, f"domain: mri\nscale: 2\ndescription: {tag}\n"))


# ----------------------------------------------------------------- overrides
def test_parse_override_types():
    assert parse_override("train.max_iterations=50") == (["train", "max_iterations"], 50)
    assert parse_override("inference.tta=true") == (["inference", "tta"], True)
    assert parse_override("train.lr=1.5e-4") == (["train", "lr"], 1.5e-4)
    assert parse_override("data.inputs=[a.nii, b.nii]") == (["data", "inputs"], ["a.nii", "b.nii"])
    assert parse_override("train.init=") == (["train", "init"], None)
    assert parse_override("train.init=null") == (["train", "init"], None)
    assert parse_override("description=a=b") == (["description"], "a=b")
    # text that is not valid YAML stays a string
    assert parse_override("output.name_template={stem}_x{ext}") == (
        ["output", "name_template"],
        "{stem}_x{ext}",
    )
    for bad in ("train.lr", "=5", "train..lr=5", ".lr=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_overrides_nested_and_typed():
    cfg = load_config(
        "mri_thick_slice",
        [
            "train.max_iterations=50",
            "train.max_minutes=0.5",
            "train.lr=1e-3",  # YAML 1.1 reads this as a string; pydantic parses it
            "train.precision=fp32",
            "inference.tta=true",
            "data.inputs=[a.nii.gz, b.nii.gz]",
            "train.losses.0.weight=0.5",
            "model.kwargs.n_blocks=4",
            "degradation.noise.sigma=0.01",
            "train.schedule={name: step, step_size: 10}",
        ],
    )
    assert cfg.train.max_iterations == 50 and isinstance(cfg.train.max_iterations, int)
    assert cfg.train.max_minutes == 0.5
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.precision == "fp32"
    assert cfg.inference.tta is True
    assert cfg.data.inputs == ["a.nii.gz", "b.nii.gz"]
    assert cfg.train.losses[0].weight == 0.5
    assert cfg.model.kwargs["n_blocks"] == 4
    assert cfg.profile.degradation.noise.sigma == 0.01
    assert cfg.profile.degradation.noise.model == "rician"  # merged, not replaced
    assert cfg.train.schedule.name == "step" and cfg.train.schedule.step_size == 10


def test_a_single_input_string_becomes_a_list():
    assert load_config("multiband_x2", ["data.inputs=scene.tif"]).data.inputs == ["scene.tif"]


def test_unknown_override_path_has_a_hint():
    with pytest.raises(ConfigError) as info:
        load_config("mri_thick_slice", ["train.max_iteratons=5"])
    msg = str(info.value)
    assert "did you mean 'max_iterations'" in msg
    assert "--set 'train.max_iteratons=5'" in msg
    assert "mri_thick_slice.yaml" in msg
    for bad, hint in [
        ("trian.lr=1", "'train'"),
        ("degradation.psf.mtf_nyqist=0.3", "'mtf_nyquist'"),
        ("normalisation.hgh=99", "'high'"),
        ("train.losses.0.nmae=l1", "'name'"),
    ]:
        with pytest.raises(ConfigError, match=f"did you mean {hint}"):
            load_config("mri_thick_slice", [bad])


def test_override_below_a_plain_value_or_out_of_range_index():
    with pytest.raises(ConfigError, match="plain value"):
        load_config("mri_thick_slice", ["scale.x=2"])
    with pytest.raises(ConfigError, match="out of range"):
        load_config("mri_thick_slice", ["train.losses.5.weight=2"])


def test_apply_overrides_does_not_touch_its_input():
    data = minimal()
    out = apply_overrides(data, ["train.max_iterations=3"])
    assert out["train"]["max_iterations"] == 3 and "train" not in data


def test_psf_width_override_replaces_the_other_form():
    cfg = load_config("mri_isotropic_x2", ["degradation.psf.mtf_nyquist=0.3"])
    assert cfg.profile.degradation.psf.fwhm is None and cfg.profile.mtf_nyquist() == 0.3
    cfg = load_config("sentinel2_20m_to_10m", ["degradation.psf.fwhm=1.2"])
    assert cfg.profile.degradation.psf.mtf_nyquist is None
    cfg = load_config("sentinel2_20m_to_10m", ["degradation.psf.mtf_nyquist.B05=0.3"])
    assert cfg.profile.mtf_nyquist("B05") == 0.3 and cfg.profile.mtf_nyquist("B06") == 0.34
    cfg = load_config("sentinel2_20m_to_10m", ["degradation.psf.shape=box"])
    assert cfg.profile.degradation.psf.mtf_nyquist is None


def test_normalisation_override_merges_or_replaces():
    cfg = load_config("ct_isotropic_x2", ["normalisation.min=-160", "normalisation.max=240"])
    assert (cfg.profile.normalisation.min, cfg.profile.normalisation.max) == (-160, 240)
    with pytest.raises(ConfigError, match="normalisation.min: unknown key"):
        load_config(
            "ct_isotropic_x2", ["normalisation.method=percentile", "metrics.data_range=reference_range"]
        )
    cfg = load_config("mri_thick_slice", ["normalisation={method: hu_window, min: 0, max: 1000}"])
    assert cfg.profile.normalisation.method == "hu_window"


# ----------------------------------------------------------------- scale semantics
def test_scale_for_auto_volumes():
    cfg = load_config("mri_thick_slice")
    assert cfg.scale_for([0.5, 0.5, 5.0]) == (1.0, 1.0, 10.0)
    assert cfg.scale_for([4.0, 1.0, 1.0]) == (4.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="nothing to upsample"):
        cfg.scale_for([1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="needs the image spacing"):
        cfg.scale_for(None)
    with pytest.raises(ConfigError, match="above the maximum") as err:
        cfg.scale_for([0.1, 0.1, 5.0000001])
    assert "gives [1, 1, 50]" in str(err.value), err.value  # numbers people read, not float noise
    with pytest.raises(ConfigError, match=r"spacing \[1, 1, 1\] mm is already at or below the target \[1, 1, 1\]"):
        cfg.scale_for([1.0, 1.0, 1.0])
    cfg = load_config("mri_thick_slice", ["target_spacing=1.0"])
    assert cfg.scale_for([0.5, 0.5, 3.0]) == (1.0, 1.0, 3.0)  # never downsampled
    cfg = load_config("mri_thick_slice", ["target_spacing=[1, 1, 2]"])
    assert cfg.scale_for([1.0, 1.0, 4.0]) == (1.0, 1.0, 2.0)


def test_scale_for_numbers_lists_and_raster_auto():
    assert load_config("mri_isotropic_x2").scale_for() == (2.0, 2.0, 2.0)
    assert load_config("multiband_x2").scale_for() == (2.0, 2.0)
    assert load_config("mri_supervised_x2").scale_for() == (2.0, 2.0, 1.0)
    assert load_config("sentinel2_20m_to_10m", ["scale=auto"]).scale_for() == (2.0, 2.0)
    cfg = load_config("sentinel2_20m_to_10m", ["scale=auto", "bands.targets=[60m]", "bands.others=drop"])
    assert cfg.scale_for() == (6.0, 6.0)
    with pytest.raises(ConfigError, match="auto on rasters"):
        load_config("multiband_x2", ["scale=auto"])


# ----------------------------------------------------------------- resolved and hash
def test_resolved_merges_the_profile_and_hash_is_stable():
    a = load_config("mri_thick_slice")
    b = load_config("mri_thick_slice")
    assert a.config_hash() == b.config_hash()
    r = a.resolved()
    assert r["domain"]["normalisation"]["method"] == "percentile"
    assert r["domain"]["degradation"]["model"] == "slice_profile"
    assert "degradation" not in r and "normalisation" not in r and "metrics" not in r
    assert r["model"]["spatial_dims"] == 2
    # a real change changes the hash; the description does not
    assert load_config("mri_thick_slice", ["train.max_iterations=5"]).config_hash() != a.config_hash()
    assert load_config("mri_thick_slice", ["degradation.noise.sigma=0.02"]).config_hash() != a.config_hash()
    assert load_config("mri_thick_slice", ["description=other"]).config_hash() == a.config_hash()
    # batch resume can leave the input list out
    c = load_config("mri_thick_slice", ["data.inputs=[x.nii]"])
    assert c.config_hash() != a.config_hash()
    assert c.config_hash(exclude=["data.inputs"]) == a.config_hash(exclude=["data.inputs"])
    # the YAML dump is data again
    assert yaml.safe_load(a.to_yaml()) == r


def test_default_model_comes_from_the_domain(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            {"domain": "sentinel2_l2a", "scale": 2, "bands": {"guides": ["10m"], "targets": ["20m"]}},
        )
    )
    assert cfg.model.name is None
    assert cfg.resolved()["model"]["name"] == "guided"
    assert cfg.spatial_dims == 2


def test_jobconfig_validated_directly_resolves_its_profile_lazily():
    cfg = JobConfig.model_validate(minimal())
    assert cfg.profile.name == "mri"
    bad = JobConfig.model_validate(minimal(domain="nope"))
    with pytest.raises(ConfigError, match="unknown domain profile"):
        _ = bad.profile


def test_docstring_examples():
    result = doctest.testmod(medsat_sr.config)
    assert result.failed == 0 and result.attempted > 0


# ----------------------------------------------------------------- packaging
@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_pyproject_maps_the_data_folders_into_the_package():
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = meta["tool"]["setuptools"]
    assert setuptools["package-dir"] == {
        "medsat_sr._data.domains": "domains",
        "medsat_sr._data.configs": "configs",
    }
    for pkg, folder in setuptools["package-dir"].items():
        assert (REPO / folder).is_dir()
        assert setuptools["package-data"][pkg] == ["*.yaml"]
    setup_py = (REPO / "setup.py").read_text()
    assert '"medsat_sr._data.domains", "medsat_sr._data.configs"' in setup_py


def test_a_bad_set_value_names_the_set_item_that_gave_it() -> None:
    with pytest.raises(ConfigError, match=r"train\.precision: .*got 'fast' \(set by --set train\.precision=fast\)$"):
        load_config("multiband_x2", ["train.lr=0.001", "train.precision=fast"])
    with pytest.raises(ValueError) as info:  # a file's own mistake does not blame an unrelated --set
        load_config({"name": "x", "domain": "multiband", "train": {"precision": "fast"}}, ["train.lr=0.001"])
    assert "--set" not in str(info.value)
