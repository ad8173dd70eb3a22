"""What the actor sends at a weight sync: every parameter once, HF names, tied aliases dropped."""

from rlsys.models.tiny import build_tiny_model
from rlsys.workers.model_utils import full_named_parameters


def test_tied_lm_head_is_sent_once_as_the_embedding():
    model, _ = build_tiny_model(tie_word_embeddings=True)
    names = [n for n, _ in full_named_parameters(model)]
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    assert len(names) == len(set(names)) == len(list(model.parameters()))


def test_untied_model_sends_lm_head_and_tensors_are_the_parameters():
    model, _ = build_tiny_model(tie_word_embeddings=False)
    sent = dict(full_named_parameters(model))
    assert "lm_head.weight" in sent
    assert sent["model.norm.weight"].data_ptr() == model.model.norm.weight.data_ptr()
    assert not any(t.requires_grad for t in sent.values())
