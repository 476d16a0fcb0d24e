"""Class-name text embeddings: prompt ensembling against a float64 per-prompt reference, and the disk cache."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP

from models.errors import AVSegError
from models.ovavss.clip_model import LoadedClip
from models.ovavss.prompts import VILD_TEMPLATES
from models.ovavss.text_embeddings import (
    TextEmbeddingCache,
    class_name_embeddings,
    encode_class_names,
    validate_class_names,
)

torch.set_num_threads(1)

NAMES = ["accordion", "emergency-car", "hair-dryer", "crème brûlée", "a b  c"]


def tiny_clip_model(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
    )
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-16")


class CountingEncoder:
    """Wraps a model's encode_text and counts the prompts it is asked to encode."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self.prompts = 0
        self.original = model.encode_text
        model.encode_text = self  # instance attribute shadows the method

    def __call__(self, tokens: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        self.prompts += tokens.shape[0]
        return self.original(tokens, *args, **kwargs)


def loaded(model, tokenizer, weights_id="test-weights") -> LoadedClip:
    return LoadedClip(model=model, tokenizer=tokenizer, model_name="tiny-test", weights_id=weights_id, image_size=32)


def reference_embeddings(model, tokenizer, names, templates) -> torch.Tensor:
    """One prompt at a time in float64: normalise each, average, normalise (spec §7.2)."""
    model64 = copy.deepcopy(model).double()
    rows = []
    for name in names:
        per_template = []
        for template in templates:
            tokens = tokenizer([template.format(name)])
            feature = model64.encode_text(tokens)[0]
            per_template.append(feature / feature.norm())
        mean = torch.stack(per_template).mean(0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


def test_batched_encoding_matches_per_prompt_float64_reference(tokenizer):
    model = tiny_clip_model()
    counter = CountingEncoder(model)
    embeddings = encode_class_names(model, tokenizer, NAMES, VILD_TEMPLATES, batch_size=32)
    assert embeddings.shape == (len(NAMES), 16) and embeddings.dtype == torch.float32
    assert counter.calls == 3 and counter.prompts == len(NAMES) * 14  # 70 prompts in batches of 32
    expected = reference_embeddings(model, tokenizer, NAMES, VILD_TEMPLATES)
    torch.testing.assert_close(embeddings.double(), expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(NAMES)))


def test_names_are_verbatim_and_order_is_kept(tokenizer):
    model = tiny_clip_model()
    both = encode_class_names(model, tokenizer, ["hair-dryer", "hair dryer"], ["a photo of a {}."])
    assert not torch.allclose(both[0], both[1])  # the hyphen is not normalised away
    swapped = encode_class_names(model, tokenizer, ["hair dryer", "hair-dryer"], ["a photo of a {}."])
    torch.testing.assert_close(swapped, both.flip(0))
    single = F.normalize(model.encode_text(tokenizer(["a photo of a hair-dryer."])).float(), dim=-1)[0]
    torch.testing.assert_close(both[0], single, rtol=0, atol=1e-6)


def test_cache_hit_returns_identical_values_without_encoding(tmp_path, tokenizer):
    cache = TextEmbeddingCache(tmp_path / "cache")
    first_model = tiny_clip_model()
    first_counter = CountingEncoder(first_model)
    first = class_name_embeddings(loaded(first_model, tokenizer), NAMES, cache=cache)
    assert first_counter.prompts == len(NAMES) * len(VILD_TEMPLATES)
    path = cache.path_for("tiny-test", "test-weights", VILD_TEMPLATES)
    assert path.is_file() and list(path.parent.iterdir()) == [path]  # no temporary files left

    second_model = tiny_clip_model()
    second_counter = CountingEncoder(second_model)
    second = class_name_embeddings(loaded(second_model, tokenizer), NAMES, cache=cache)
    assert second_counter.calls == 0
    assert torch.equal(first, second)

    # A vocabulary with one new name encodes only that name; the reordered result keeps the cached rows.
    third = class_name_embeddings(loaded(second_model, tokenizer), ["zither", NAMES[2], NAMES[0]], cache=cache)
    assert second_counter.prompts == len(VILD_TEMPLATES)
    assert torch.equal(third[1], first[2]) and torch.equal(third[2], first[0])
    assert set(cache.load("tiny-test", "test-weights", VILD_TEMPLATES)) == set(NAMES) | {"zither"}


def test_cache_is_keyed_by_weights_and_templates(tmp_path, tokenizer):
    cache = TextEmbeddingCache(tmp_path)
    model = tiny_clip_model()
    counter = CountingEncoder(model)
    class_name_embeddings(loaded(model, tokenizer, "weights-a"), ["dog"], cache=cache)
    class_name_embeddings(loaded(model, tokenizer, "weights-b"), ["dog"], cache=cache)
    class_name_embeddings(loaded(model, tokenizer, "weights-a"), ["dog"], templates=["{}"], cache=cache)
    assert counter.prompts == 14 + 14 + 1
    assert len(list(tmp_path.glob("*.pt"))) == 3
    other_model = tiny_clip_model(seed=1)
    other = class_name_embeddings(loaded(other_model, tokenizer, "weights-c"), ["dog"], cache=cache)
    cached_a = class_name_embeddings(loaded(other_model, tokenizer, "weights-a"), ["dog"], cache=cache)
    assert not torch.allclose(other, cached_a)


def test_no_cache_for_random_weights_or_when_disabled(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "avseg-cache"))
    model = tiny_clip_model()
    class_name_embeddings(loaded(model, tokenizer, weights_id=None), ["dog"])
    class_name_embeddings(loaded(model, tokenizer), ["dog"], use_cache=False)
    assert not (tmp_path / "avseg-cache").exists()
    class_name_embeddings(loaded(model, tokenizer), ["dog"])  # default folder = $AVSEG_CACHE/text-embeddings
    assert len(list((tmp_path / "avseg-cache" / "text-embeddings").glob("*.pt"))) == 1


def test_corrupt_or_foreign_cache_file_is_recomputed(tmp_path, tokenizer):
    cache = TextEmbeddingCache(tmp_path)
    model = tiny_clip_model()
    path = cache.path_for("tiny-test", "test-weights", VILD_TEMPLATES)
    path.write_bytes(b"not a torch file")
    counter = CountingEncoder(model)
    first = class_name_embeddings(loaded(model, tokenizer), ["dog"], cache=cache)
    assert counter.prompts == 14
    assert torch.equal(cache.load("tiny-test", "test-weights", VILD_TEMPLATES)["dog"], first[0])
    # A file written for another key (same slug) is not trusted.
    torch.save({"key": {"model_name": "other"}, "embeddings": {"dog": torch.zeros(16)}}, path)
    again = class_name_embeddings(loaded(model, tokenizer), ["dog"], cache=cache)
    assert counter.prompts == 28 and torch.equal(again, first)


def test_vocabulary_validation():
    assert validate_class_names(["a", "b-c"]) == ("a", "b-c")
    with pytest.raises(AVSegError, match="vocabulary is empty"):
        validate_class_names([])
    with pytest.raises(AVSegError, match="empty class name"):
        validate_class_names(["dog", "  "])
    with pytest.raises(AVSegError, match="'dog' appears twice"):
        validate_class_names(["dog", "cat", "dog"])
    # names are kept verbatim, but two names CLIP reads the same (one embedding) are refused
    assert validate_class_names(iter(["Pipa", " electric guitar"])) == ("Pipa", " electric guitar")
    with pytest.raises(AVSegError, match="'pipa' and 'Pipa ' are the same to CLIP"):
        validate_class_names(["pipa", "Pipa "])
    with pytest.raises(AVSegError, match="'electric guitar' and 'electric  guitar' are the same to CLIP"):
        validate_class_names(["electric guitar", "electric  guitar"])


@pytest.mark.parametrize(
    "names, message",
    [("dog", "not one string: 'dog'$"), ("pipa,violin", r"not one string: 'pipa,violin' \(split it at the commas\)"),
     (b"dog", "not one string"), ({"pipa", "violin"}, "not a set"), (None, "got NoneType"), (3, "got int"),
     (["pipa", 3], "class names must be strings, got int 3"), (["pipa", None], "got NoneType None")],
)
def test_vocabulary_of_the_wrong_type_is_a_type_error(names, message):
    with pytest.raises(TypeError, match=message):
        validate_class_names(names)
