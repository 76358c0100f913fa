import pytest
import yaml

from edgekit.errors import RecipeError
from edgekit.optimize.recipe import EXAMPLE_RECIPE, Recipe, load_recipe, parse_compress_flag


def test_example_recipe_parses_to_the_documented_chain():
    r = Recipe.from_dict(yaml.safe_load(EXAMPLE_RECIPE))
    assert r.prune.target_sparsity == 0.75 and r.cluster.clusters == 16 and r.qat.epochs == 2
    assert r.quantize.mode == "int8" and r.compress.index_bits == 4
    assert r.prune_channels.fraction == 0.5 and r.prune_channels.scope == "layer"
    assert r.describe() == "prune-channels 0.5 + prune 0.75 + cluster 16 + qat + int8 + lut4"


def test_flags_build_the_same_recipe_as_yaml():
    flags = Recipe.from_flags(prune=0.75, cluster=16, qat=True, compress="lut4", epochs=3)
    text = {"prune": {"target_sparsity": 0.75, "epochs": 3}, "cluster": {"clusters": 16, "epochs": 3},
            "qat": {"epochs": 3}, "compress": {"index_bits": 4}}
    assert Recipe.from_dict(text).to_dict() == flags.to_dict()


@pytest.mark.parametrize("raw,match", [
    ({"prune": {"target_sparsity": 1.0}}, "prune.target_sparsity"),
    ({"prune": {"target_sparsity": 0}}, "prune.target_sparsity"),
    ({"cluster": {"clusters": 1}}, "cluster.clusters"),
    ({"clusterr": {}}, "unknown recipe key 'clusterr'"),
    ({"prune": {"sparsity": 0.5}}, "unknown recipe key 'prune.sparsity'"),
    ({"quantize": {"mode": "int4"}}, "quantize.mode"),
    ({"compress": {"index_bits": 8}}, "compress.index_bits"),
    ({"train": {"batch_size": "32"}}, "train.batch_size"),
    ({"strip": "yes"}, "strip"),
    ({"qat": {}, "quantize": {"mode": "float16"}}, "qat needs"),
    (["prune"], "top level"),
])
def test_bad_recipes_name_the_key(raw, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.from_dict(raw)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict({"prune": {"target_sparsty": 0.5}})
    assert "target_sparsity" in e.value.hint


def test_load_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prune: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


@pytest.mark.parametrize("text,bits", [("lut4", 4), ("LUT2", 2), ("lut", 4), ("lut7", 7)])
def test_compress_flag(text, bits):
    assert parse_compress_flag(text).index_bits == bits


@pytest.mark.parametrize("text", ["lut0", "lut8", "huffman", "lutx"])
def test_compress_flag_rejects(text):
    with pytest.raises(RecipeError):
        parse_compress_flag(text)
