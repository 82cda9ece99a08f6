"""serving.config: YAML, sizes, overrides and errors that name the key."""

import pytest

from serving.config import Config, ConfigError, ModelSpec, load_config, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    (1024, 1024), ("1024", 1024), ("2GiB", 2 << 30), ("512 MiB", 512 << 20),
    ("1.5GB", 1_500_000_000), ("0", 0), ("4k", 4000), ("3tib", 3 << 40),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["two", "2XB", -1, True, "", None, 1.5, "-3GiB"])
def test_bad_sizes_name_the_key(bad):
    with pytest.raises(ConfigError, match="dram_per_worker"):
        Config(dram_per_worker=bad)


def test_yaml_with_overrides_on_top(tmp_path):
    path = tmp_path / "deploy.yaml"
    path.write_text("""
port: 9000
workers: 3
dram_per_worker: 1GiB
request_timeout: 30
models:
  - name: tiny
    path: /models/tiny
    min_instances: 1
    max_instances: 2
    keep_alive: 5
  - name: other
    path: /models/other
""")
    config = load_config(path, port=9100, api_key="k", models=["tiny=/elsewhere/tiny",
                                                              "new=/models/new"])
    assert (config.port, config.workers, config.api_key) == (9100, 3, "k")
    assert config.dram_per_worker == 1 << 30 and config.request_timeout == 30.0
    tiny = config.model("tiny")
    assert (tiny.path, tiny.min_instances, tiny.max_instances, tiny.keep_alive) == (
        "/elsewhere/tiny", 1, 2, 5.0)  # NAME=PATH changes only the path
    assert [m.name for m in config.models] == ["tiny", "other", "new"]
    assert config.registry_location.endswith("registry")
    assert config.worker_dir(2).endswith("workers/2")


def test_none_overrides_leave_the_file_alone(tmp_path):
    path = tmp_path / "deploy.yaml"
    path.write_text("port: 9000\n")
    assert load_config(path, port=None, host=None).port == 9000


def test_an_empty_file_gives_the_defaults(tmp_path):
    path = tmp_path / "deploy.yaml"
    path.write_text("")
    assert load_config(path) == Config()


@pytest.mark.parametrize(("yaml_text", "words"), [
    ("workers: many\n", ["workers", "many"]),
    ("workers: 0\n", ["workers", "at least 1"]),
    ("port: 70000\n", ["port", "70000"]),
    ("colour: blue\n", ["colour", "unknown"]),
    ("models: tiny\n", ["models", "list"]),
    ("models: [{name: a, keep_alive: soon}]\n", ["models['a'].keep_alive", "soon"]),
    ("models: [{name: a, min_instances: 3, max_instances: 2}]\n", ["min_instances", "3"]),
    ("models: [{name: a, gpus: 2}]\n", ["models[0]", "gpus"]),
    ("models: [{path: /x}]\n", ["models[0]", "name"]),
    ("models: [{name: a}, {name: a}]\n", ["a", "more than once"]),
    ("request_timeout: -1\n", ["request_timeout", "negative"]),
    ("- a\n- b\n", ["mapping"]),
    ("port: [\n", ["YAML"]),
])
def test_errors_name_the_bad_key_and_value(tmp_path, yaml_text, words):
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for word in words:
        assert word in str(info.value)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_model_arguments():
    with pytest.raises(ConfigError, match="NAME=PATH"):
        load_config(None, models=["tiny"])
    assert load_config(None, models=[ModelSpec("a", "/p")]).models == [ModelSpec("a", "/p")]


def test_threads_share_the_cores():
    assert Config(workers=1, threads_per_worker=3).threads() == 3
    assert Config(workers=10_000).threads() == 1



def test_registry_bandwidth_is_a_rate_in_bytes_per_second():
    assert Config(registry_bandwidth="125MB").registry_bandwidth == 125_000_000
    assert Config().registry_bandwidth is None
    for bad in (0, "fast", -1):
        with pytest.raises(ConfigError, match="registry_bandwidth"):
            Config(registry_bandwidth=bad)
