"""Synthetic captions on real images and the LSTM-CNN fusion of Sharma n.d., Que-1 (L_Fus, L_MML)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from repair_jax.bias.captions import (
    ADJECTIVES, DIGIT_WORDS, GENERIC, build_vocab, check_text_ids, digits_captions, encode, make_captions,
    npz_captions, tokenize,
)
from repair_jax.bias.mtl import head_accuracies, predict_heads
from repair_jax.bias.multimodal import LSTMEncoder, lstm_cnn_model, mml_objective, train_multimodal
from repair_jax.errors import UserError


def test_tokenizer_vocab_and_padding():
    assert tokenize("A dark T-shirt, size 3!") == ["a", "dark", "t", "shirt", "size", "3"]
    vocab = build_vocab(["a b", "b c"])
    assert vocab == ("<pad>", "<unk>", "a", "b", "c")
    ids = encode(["a b", "c zzz a b c"], vocab, 3)
    np.testing.assert_array_equal(ids, [[2, 3, 0], [4, 1, 2]])  # padded with 0, truncated, unknown -> 1
    assert ids.dtype == np.int32


def test_captions_kinds_and_shares():
    words = [("cat",), ("dog",), ("cow",)]
    confusable = [1, 2, 0]
    labels = np.repeat(np.arange(3), 2000)
    caps, kinds = make_captions(labels, words, confusable, np.random.default_rng(0), 0.2, 0.1)
    for y, c, k in zip(labels, caps, kinds):
        if k == 1:
            assert c in GENERIC
        else:
            _, adj, noun = c.split()
            assert adj in ADJECTIVES and noun == words[confusable[y] if k == 2 else y][0]
    n = len(labels)
    for kind, share in ((1, 0.2), (2, 0.1)):  # binomial: within 5 standard deviations
        assert abs(np.mean(kinds == kind) - share) < 5 * np.sqrt(share * (1 - share) / n)
    with pytest.raises(UserError, match="caption shares"):
        make_captions(labels, words, confusable, np.random.default_rng(0), 0.8, 0.3)


@pytest.fixture(scope="module")
def captions():
    return digits_captions(seed=0)


def test_digits_captions_on_real_images(captions, digits):
    assert captions.name == "digits_captions"
    np.testing.assert_array_equal(captions.images.test.x, digits.test.x)  # the real images, same split
    for split in ("train", "test"):
        text = captions.text[split]
        assert text.shape == (len(captions.images.split(split)), 6)
        check_text_ids(text, len(captions.vocab))
        assert len(captions.captions[split]) == text.shape[0]
    again = digits_captions(seed=0)
    np.testing.assert_array_equal(again.text["train"], captions.text["train"])  # deterministic
    assert "seven" in captions.vocab and "sevens" in captions.vocab


def test_bad_text_and_image_only_data(captions, digits):
    with pytest.raises(UserError, match=r"token ids must be in \[0, 5\)"):
        check_text_ids(np.array([[1, 7]]), 5)
    with pytest.raises(UserError, match="integer token ids"):
        check_text_ids(np.array([1.0, 2.0]), 5)
    from repair_jax.train import TrainConfig

    model = lstm_cnn_model("mlp", 10, len(captions.vocab), embed=4, lstm_hidden=4, hidden=(8,))
    with pytest.raises(UserError, match="digits is image-only"):
        train_multimodal(model, digits, TrainConfig(epochs=1))
    small = lstm_cnn_model("mlp", 10, 5, embed=4, lstm_hidden=4, hidden=(8,))
    with pytest.raises(UserError, match="token ids must be in"):
        train_multimodal(small, captions, TrainConfig(epochs=1))
    with pytest.raises(UserError, match="needs caption token ids"):
        jax.eval_shape(lambda k: model.init(k, jnp.zeros((2, 8, 8, 1))), jax.random.PRNGKey(0))
    with pytest.raises(UserError, match="alpha must be >= 0"):
        mml_objective(-1.0, 1.0)


def test_lstm_encoder_ignores_padding():
    vocab = build_vocab(["a dark seven"])
    enc = LSTMEncoder(len(vocab), embed=4, hidden=5)
    short, long = encode(["a dark seven"], vocab, 3), encode(["a dark seven"], vocab, 7)
    v = jax.jit(enc.init)(jax.random.PRNGKey(0), jnp.asarray(long))
    apply = jax.jit(enc.apply)
    np.testing.assert_allclose(apply(v, jnp.asarray(short)), apply(v, jnp.asarray(long)), rtol=1e-6)


def test_lstm_cnn_trains_and_l_mml_is_its_weighted_sum(captions):
    from repair_jax.train import TrainConfig

    model = lstm_cnn_model("mlp", 10, len(captions.vocab), embed=8, lstm_hidden=16, hidden=(32,))
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, seed=0)
    state, history = train_multimodal(model, captions, cfg, alpha_cnn=0.5, alpha_lstm=0.25)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    z = predict_heads(state, captions.inputs("test"), batch_size=128)
    y = captions.images.test.y
    assert z.shape == (len(y), 3, 10)
    ce = [-log_softmax(z[:, h], axis=1)[np.arange(len(y)), y].mean() for h in range(3)]
    batch = {**captions.inputs("test"), "y": y}
    loss, _ = mml_objective(0.5, 0.25)(state.params, state, batch)  # an MLP backbone: train = eval mode
    np.testing.assert_allclose(loss, ce[0] + 0.5 * ce[1] + 0.25 * ce[2], rtol=1e-4)
    accs = head_accuracies(z, y, names=("fusion", "cnn", "lstm"))
    assert accs["fusion"] > 0.5 and set(accs) == {"fusion", "cnn", "lstm", "ensemble"}


def test_npz_captions_follow_their_images_through_the_split(tmp_path):
    """A user's npz of real digits with caption ids (built here from their labels, so each caption can be
    checked against its image's class): after the split every caption still belongs to its image."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    vocab = np.array(["<pad>", "a", *DIGIT_WORDS])
    text = np.stack([np.ones_like(y), y + 2, np.zeros_like(y)], axis=1)  # "a <class word>" + padding
    path = tmp_path / "mine.npz"
    np.savez(path, x=x.reshape(-1, 8, 8) / 16.0, y=y, text=text, vocab=vocab)
    data = npz_captions(str(path), seed=3)
    assert data.vocab == tuple(vocab) and data.name.startswith("npz_captions:")
    for split in ("train", "val", "pool", "test"):
        ids, labels = data.text[split], data.images.split(split).y
        assert ids.dtype == np.int32 and len(ids) == len(labels) > 0
        np.testing.assert_array_equal(ids[:, 1] - 2, labels)
        assert data.captions[split][0] == f"a {DIGIT_WORDS[labels[0]]}"
    np.savez(tmp_path / "bad.npz", x=x.reshape(-1, 8, 8) / 16.0, y=y, text=text + 20, vocab=vocab)
    with pytest.raises(UserError, match="token ids must be in"):
        npz_captions(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "none.npz", x=x.reshape(-1, 8, 8) / 16.0, y=y)
    with pytest.raises(UserError, match="needs caption token ids"):
        npz_captions(str(tmp_path / "none.npz"))
