"""Synthetic captions on real images for the multimodal case of Sharma n.d., Que-1.

No real image+text set is available offline, so ``fashion_mnist_captions`` (and the small
``digits_captions``) pair each *real* image with a short caption generated from per-class
vocabularies. Caption kinds, drawn independently per example with a fixed seed:

* ``clean`` (share 1 - ambiguous - confusable): an adjective and a noun of the image's class;
* ``ambiguous`` (default 20 %): only words shared by every class ("a photo of an item"), no class cue;
* ``confusable`` (default 10 %): a caption of a visually confusable class (e.g. shirt <-> T-shirt,
  sneaker <-> sandal, 3 <-> 8), i.e. a wrong cue.

So neither modality alone is perfect: the text is uninformative or misleading for ~30 % of the
examples, the images are confusable for some classes. Tokenizer and padding are plain functions.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from repair_jax.data import Dataset, SPLITS
from repair_jax.errors import UserError

PAD, UNK = "<pad>", "<unk>"
GENERIC = ("a photo of an item", "a picture of something", "an image of a thing", "a small grey picture")
ADJECTIVES = ("small", "grey", "plain", "simple", "dark", "light", "blurry", "centred")

FASHION_VOCAB = {
    "T-shirt/top": ("tshirt", "tee", "top"), "Trouser": ("trousers", "pants", "jeans"),
    "Pullover": ("pullover", "sweater", "jumper"), "Dress": ("dress", "gown", "frock"),
    "Coat": ("coat", "jacket", "parka"), "Sandal": ("sandal", "flipflop", "slide"),
    "Shirt": ("shirt", "blouse", "buttondown"), "Sneaker": ("sneaker", "trainer", "runner"),
    "Bag": ("bag", "handbag", "purse"), "Ankle boot": ("boot", "ankleboot", "bootie"),
}
FASHION_CONFUSABLE = {"T-shirt/top": "Shirt", "Trouser": "Dress", "Pullover": "Coat", "Dress": "Coat",
                      "Coat": "Pullover", "Sandal": "Sneaker", "Shirt": "T-shirt/top", "Sneaker": "Sandal",
                      "Bag": "Pullover", "Ankle boot": "Sneaker"}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_CONFUSABLE = {0: 6, 1: 7, 2: 7, 3: 8, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 4}


@dataclasses.dataclass(frozen=True)
class CaptionedDataset:
    """Real images (``images``, a :class:`repair_jax.data.Dataset`) with caption token ids per split
    (``text[split]`` (N, L) int32, 0 = padding), the vocabulary (id -> word), the captions and kinds."""

    name: str
    images: Dataset
    text: dict
    vocab: tuple[str, ...]
    captions: dict
    kinds: dict

    @property
    def num_classes(self) -> int:
        return self.images.num_classes

    def inputs(self, split: str) -> dict:
        """``{"x", "text"}`` of a split (the model's inputs)."""
        return {"x": self.images.split(split).x, "text": self.text[split]}


def tokenize(text: str) -> list[str]:
    """Lower-case words (letters and digits); everything else separates."""
    return re.findall(r"[a-z0-9]+", text.lower())


def build_vocab(texts: Sequence[str]) -> tuple[str, ...]:
    """id -> word: ``<pad>`` (0), ``<unk>`` (1), then the words of ``texts`` sorted."""
    return (PAD, UNK, *sorted({w for t in texts for w in tokenize(t)}))


def encode(texts: Sequence[str], vocab: Sequence[str], max_len: int) -> np.ndarray:
    """Token ids (N, max_len) int32, truncated and right-padded with 0; unknown words -> 1."""
    index = {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(texts), max_len), np.int32)
    for n, t in enumerate(texts):
        ids = [index.get(w, 1) for w in tokenize(t)][:max_len]
        out[n, :len(ids)] = ids
    return out


def check_text_ids(text: np.ndarray, vocab_size: int) -> None:
    """Token ids must be integers in [0, vocab_size): one-line UserError otherwise."""
    text = np.asarray(text)
    if text.ndim != 2 or not np.issubdtype(text.dtype, np.integer):
        raise UserError(f"text must be (N, L) integer token ids, got {text.dtype} of shape {text.shape}")
    if text.size and (text.min() < 0 or text.max() >= vocab_size):
        raise UserError(f"text token ids must be in [0, {vocab_size}), got ids in [{text.min()}, {text.max()}]")


def make_captions(labels: np.ndarray, class_words: Sequence[Sequence[str]], confusable: Sequence[int],
                  rng: np.random.Generator, ambiguous: float = 0.2, confusing: float = 0.1):
    """(captions, kinds) for ``labels`` (N,): kind 0 clean, 1 ambiguous, 2 confusable (see module doc)."""
    if not (0 <= ambiguous and 0 <= confusing and ambiguous + confusing <= 1):
        raise UserError(f"caption shares must be >= 0 and sum to <= 1, got {ambiguous} and {confusing}")
    kinds = rng.choice(3, size=len(labels), p=[1 - ambiguous - confusing, ambiguous, confusing])
    adj = rng.integers(0, len(ADJECTIVES), len(labels))
    noun = rng.integers(0, 1 << 30, len(labels))
    generic = rng.integers(0, len(GENERIC), len(labels))
    captions = []
    for y, k, a, w, g in zip(labels, kinds, adj, noun, generic):
        if k == 1:
            captions.append(GENERIC[g])
            continue
        c = confusable[y] if k == 2 else y
        captions.append(f"a {ADJECTIVES[a]} {class_words[c][w % len(class_words[c])]}")
    return captions, kinds.astype(np.int32)


def caption_dataset(images: Dataset, class_words, confusable, name: str, seed: int = 0, max_len: int = 6,
                    ambiguous: float = 0.2, confusing: float = 0.1) -> CaptionedDataset:
    """Captions every split of ``images`` (vocabulary from all captions: the words are fixed by design)."""
    rng = np.random.default_rng(seed)
    captions, kinds = {}, {}
    for split in SPLITS:
        captions[split], kinds[split] = make_captions(images.split(split).y, class_words, confusable, rng,
                                                      ambiguous, confusing)
    vocab = build_vocab([c for s in SPLITS for c in captions[s]])
    text = {s: encode(captions[s], vocab, max_len) for s in SPLITS}
    return CaptionedDataset(name, images, text, vocab, captions, kinds)


def fashion_mnist_captions(seed: int = 0, data_dir: str | None = None, train_limit: int | None = None,
                           **shares) -> CaptionedDataset:
    """Real Fashion-MNIST images with synthetic captions (module doc); ``shares``: ambiguous, confusing."""
    from repair_jax.data import load_dataset

    images = load_dataset("fashion_mnist", seed=seed, data_dir=data_dir, train_limit=train_limit)
    names = images.class_names
    words = [FASHION_VOCAB[n] for n in names]
    confusable = [names.index(FASHION_CONFUSABLE[n]) for n in names]
    return caption_dataset(images, words, confusable, "fashion_mnist_captions", seed, **shares)


def digits_captions(seed: int = 0, train_limit: int | None = None, **shares) -> CaptionedDataset:
    """Real scikit-learn digits with synthetic captions ("a dark seven"); the small, embedded variant.
    ``train_limit``: as :func:`repair_jax.data.load_dataset`'s (a stratified subset of the training split)."""
    from repair_jax.data import load_dataset

    images = load_dataset("digits", seed=seed, train_limit=train_limit)
    words = [(w, w + "s") for w in DIGIT_WORDS]
    confusable = [DIGIT_CONFUSABLE[k] for k in range(10)]
    return caption_dataset(images, words, confusable, "digits_captions", seed, **shares)


def _npz_caption_ids(z, path: str) -> tuple[dict, dict]:
    """Caption ids and labels ``{"train": ...[, "test": ...]}`` of an npz (see :func:`npz_captions`)."""
    has_test = {"x_test", "y_test"} <= set(z.files)
    key = "text_train" if "text_train" in z.files else "text"
    if key not in z.files or (has_test and "text_test" not in z.files):
        raise UserError(f"{path} needs caption token ids: text (or text_train"
                        f"{' and text_test' if has_test else ''}), (N, L) integers")
    labels = {"train": z["y_train"] if "x_train" in z.files else z["y"]}
    ids = {"train": np.asarray(z[key])}
    if has_test:
        labels["test"], ids["test"] = z["y_test"], np.asarray(z["text_test"])
    for part in ids:
        if ids[part].ndim != 2 or len(ids[part]) != len(labels[part]):
            raise UserError(f"{path}: {part} captions must be (N, L), one row per image; got {ids[part].shape}")
    return ids, labels


def npz_captions(path: str, seed: int = 0) -> CaptionedDataset:
    """A user's own images with captions: the npz of ``load_dataset("npz:PATH")`` (``x``, ``y`` or
    ``x_train``, ``y_train`` [, ``x_test``, ``y_test``]) plus caption token ids ``text`` (or
    ``text_train`` [, ``text_test``]), (N, L) integers, 0 = padding, and optionally ``vocab`` (id ->
    word; default: the ids as words). The captions follow their images through the same split
    (:func:`repair_jax.data.four_way_split` of the row numbers with the same labels and seed)."""
    from repair_jax.data import four_way_split, load_dataset

    images = load_dataset(f"npz:{path}", seed=seed)
    z = np.load(path, allow_pickle=False)
    ids, labels = _npz_caption_ids(z, path)
    test = (np.arange(len(labels["test"])), labels["test"]) if "test" in ids else ()
    rows = four_way_split(np.arange(len(labels["train"])), np.asarray(labels["train"]), seed, *test)
    text = {s: (ids["test"] if s == "test" and test else ids["train"])[part.x] for s, part in zip(SPLITS, rows)}
    top = max(int(t.max()) if t.size else 0 for t in ids.values())
    vocab = tuple(str(w) for w in z["vocab"]) if "vocab" in z.files else (PAD, *(str(i) for i in range(1, top + 1)))
    for s in SPLITS:
        check_text_ids(text[s], len(vocab))
        text[s] = text[s].astype(np.int32)
    words = {s: [" ".join(vocab[i] for i in row if i) for row in text[s]] for s in SPLITS}
    return CaptionedDataset(f"npz_captions:{path}", images, text, vocab, words,
                            {s: ["user"] * len(words[s]) for s in SPLITS})
