"""Choose the SentencePiece pieces a set of languages (and a user's corpus) needs.

A Unigram tokenizer segments each space-separated word on its own (Metaspace pre-tokenizer), so
a text keeps its exact tokenization after trimming when every piece of its original segmentation
is kept: the Viterbi path that was best over the whole vocabulary is still available, with the
same scores. The selection therefore tokenizes, with the model's own tokenizer:

- word lists (``wordfreq``'s most frequent words per language), each word in its lower-case,
  capitalised and upper-case form (Turkish dotted capitals; German ``ß``, which wordfreq folds to
  ``ss``), and each form both word-initial and after punctuation (``"Der`` is ``▁"`` + ``Der``, a
  piece without the word-start mark);
- for each listed word, the pieces that spell it in any other casing (``▁iPhone``, ``▁McCain``,
  ``▁pH``: the lists are lower-case), and the word-initial pieces that spell its first three or more
  letters (stems: an inflected form missing from the list, such as Turkish ``soruşturulurken``,
  starts with the stem piece ``▁soruş`` that its listed relatives do not use);
- every piece without the word-start mark that spells a stretch inside a listed word (after its
  first letter): an unlisted inflection or compound of listed material (Turkish ``birikintisine``,
  German ``Vierteljahreszeitungen``) is segmented through such inner pieces, which the listed
  words' own best paths need not use;
- every piece of the no-space scripts (Han, kana) of a chosen language: their running text is
  one long "word" whose segmentation a word list cannot predict;
- the single characters of every alphabetic script (names, acronyms and quotes in other scripts
  occur in every language; Han and Hangul characters, thousands each, only for a language that
  writes them), so unseen words still decompose into kept pieces rather than ``<unk>``, and every
  piece without letters (digits, punctuation, symbols);
- a user's corpus, line by line, in context.

It does not touch files: ``trim.py`` applies a selection to a model folder.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mstsb_onnx.errors import ExportError

Tokenize = Callable[[list[str]], list[list[int]]]
WORD_MARK = "▁"
DEFAULT_WORDS = 100_000
NO_SPACE_SCRIPTS = frozenset({"HAN", "HIRAGANA", "KATAKANA"})
# Scripts with thousands of single-character pieces: kept only for a language that writes them.
LARGE_SCRIPTS = frozenset({"HAN", "HANGUL"})
# Characters after which a word is segmented without its word-start mark.
_CONTEXT = '"'
_BATCH = 50_000
# Stems shorter than this are mostly whole short words already kept, or noise.
STEM_LETTERS = 3


@dataclass(frozen=True)
class Language:
    wordfreq: str  # wordfreq's code for the word list
    scripts: frozenset[str]


def _lang(wordfreq: str, *scripts: str) -> Language:
    return Language(wordfreq, frozenset(scripts))


# The model card's 16 languages plus the other wordfreq languages whose scripts are classified here.
LANGUAGES: dict[str, Language] = {
    **{code: _lang(code, "LATIN") for code in (
        "ca", "cs", "da", "de", "en", "es", "fi", "fil", "fr", "hu", "id", "is", "it", "lt", "lv", "ms", "nb",
        "nl", "pl", "pt", "ro", "sh", "sk", "sl", "sv", "tr", "vi")},
    **{code: _lang(code, "CYRILLIC") for code in ("bg", "mk", "ru", "uk")},
    "ar": _lang("ar", "ARABIC"), "fa": _lang("fa", "ARABIC"), "ur": _lang("ur", "ARABIC"),
    "bn": _lang("bn", "BENGALI"), "el": _lang("el", "GREEK"), "he": _lang("he", "HEBREW"),
    "hi": _lang("hi", "DEVANAGARI"), "ko": _lang("ko", "HANGUL"), "ta": _lang("ta", "TAMIL"),
    "ja": _lang("ja", "HAN", "HIRAGANA", "KATAKANA"),
    "zh": _lang("zh", "HAN"), "zh-CN": _lang("zh", "HAN"), "zh-TW": _lang("zh", "HAN"),
}
CARD_LANGUAGES = ("ar", "cs", "de", "en", "es", "fr", "hi", "it", "ja", "nl", "pl", "pt", "ru", "tr", "zh-CN", "zh-TW")


def parse_languages(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"es,en"`` or ``["es", "en"]`` -> ("en", "es"); ``card`` stands for the card's 16 languages."""
    items = text.split(",") if isinstance(text, str) else list(text)
    codes: set[str] = set()
    for item in (i.strip() for i in items):
        if item == "card":
            codes.update(CARD_LANGUAGES)
        elif item in LANGUAGES:
            codes.add(item)
        elif item:
            raise ExportError(f"unknown language {item!r}; supported: card (the model card's 16), "
                              f"{', '.join(sorted(LANGUAGES))}")
    if not codes:
        raise ExportError("no language given; pass e.g. --languages es,en (or card for the model card's 16)")
    return tuple(sorted(codes))


def _script(ch: str) -> str | None:
    """Unicode script of a letter, from its character name (enough for the scripts above)."""
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return None
    word = name.split()[0]
    if word in ("CJK", "IDEOGRAPHIC"):  # IDEOGRAPHIC: the iteration and closing marks (々, 〆) inside Han words
        return "HAN"
    if word in ("HALFWIDTH", "KATAKANA-HIRAGANA"):
        return "KATAKANA"
    return word


def _letter_scripts(piece: str) -> frozenset[str]:
    return frozenset(s for ch in piece if unicodedata.category(ch)[0] in "LM" and (s := _script(ch)))


@dataclass
class Selection:
    """Ids of the kept pieces, and how many each source added (for the manifest)."""

    ids: set[int] = field(default_factory=set)
    added: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, ids: Iterable[int]) -> None:
        before = len(self.ids)
        self.ids.update(ids)
        self.added[source] = self.added.get(source, 0) + len(self.ids) - before


def _eszett_forms(word: str) -> set[str]:
    """wordfreq folds ß to "ss": every way of writing the word's "ss" back as ß (up to 3 of them)."""
    parts = word.split("ss")
    if len(parts) > 4:
        return {word.replace("ss", "ß")}
    forms = {parts[0]}
    for part in parts[1:]:
        forms = {f + sep + part for f in forms for sep in ("ss", "ß")}
    return forms


def _forms(words: list[str], language: str) -> list[str]:
    """Case forms of lower-case words as they occur in text, word-initial and after punctuation."""
    forms = set(words)
    if language == "de":
        forms |= {f for w in words if "ss" in w for f in _eszett_forms(w)}
    if LANGUAGES[language].scripts & {"LATIN", "CYRILLIC", "GREEK"}:
        upper = (lambda w: w.replace("i", "İ").replace("ı", "I").upper()) if language == "tr" else str.upper
        forms |= {upper(w[:1]) + w[1:] for w in list(forms)} | {upper(w) for w in list(forms)}
    return sorted(forms | {_CONTEXT + w for w in forms})


def _tokenize_all(tokenize: Tokenize, texts: list[str]) -> set[int]:
    ids: set[int] = set()
    for start in range(0, len(texts), _BATCH):
        for seq in tokenize(texts[start : start + _BATCH]):
            ids.update(seq)
    return ids


class _PieceIndex:
    """Look-ups over the vocabulary: piece -> id, and lower-cased piece -> ids of its cased spellings."""

    def __init__(self, vocab: Sequence[tuple[str, float]]) -> None:
        self.ids = {piece: i for i, (piece, _) in enumerate(vocab)}
        self.inside = {piece: i for piece, i in self.ids.items() if not piece.startswith(WORD_MARK) and len(piece) > 1}
        self.longest_inside = max(map(len, self.inside), default=0)
        self.cased: dict[str, list[int]] = {}
        for i, (piece, _) in enumerate(vocab):
            if piece != piece.lower():
                self.cased.setdefault(piece.lower(), []).append(i)

    def case_variants(self, words: Iterable[str]) -> set[int]:
        """Every cased piece that spells a whole word, word-initial or not."""
        return {i for w in words for key in (WORD_MARK + w.lower(), w.lower()) for i in self.cased.get(key, ())}

    def stems(self, forms: Iterable[str], shortest: int = STEM_LETTERS) -> set[int]:
        """Word-initial pieces that spell the first ``shortest`` or more letters of a form."""
        return {i for f in forms for k in range(shortest, len(f)) if (i := self.ids.get(WORD_MARK + f[:k])) is not None}

    def inner(self, words: Iterable[str]) -> set[int]:
        """Pieces without the word-start mark that spell a stretch of a word after its first letter."""
        found: set[int] = set()
        inside, longest = self.inside, self.longest_inside
        for w in words:
            n = len(w)
            for a in range(1, n - 1):
                for b in range(a + 2, min(n, a + longest) + 1):
                    if (i := inside.get(w[a:b])) is not None:
                        found.add(i)
        return found


def word_list(language: str, n: int) -> list[str]:
    from mstsb_onnx.export.deps import require

    require("wordfreq", extra="trim")
    import wordfreq

    return wordfreq.top_n_list(LANGUAGES[language].wordfreq, n)


def choose_pieces(vocab: Sequence[tuple[str, float]], keep_ids: Iterable[int], tokenize: Tokenize, *,
                  languages: Sequence[str] = (), corpus: Sequence[str] = (), words: int = DEFAULT_WORDS,
                  words_for: Callable[[str, int], list[str]] = word_list,
                  log: Callable[[str], None] = lambda line: None) -> Selection:
    """The ids to keep. ``keep_ids`` are kept whatever happens (special and added tokens, unk).

    Without languages, the corpus's own scripts decide which single characters are kept.
    """
    sel = Selection()
    sel.add("special", keep_ids)
    low = min(score for _, score in vocab)
    # Unigram scores an unknown character from the lowest piece score: that piece keeps the unk penalty.
    sel.add("special", [next(i for i, (_, score) in enumerate(vocab) if score == low)])
    scripts = [_letter_scripts(piece) for piece, _ in vocab]
    chosen = frozenset({"LATIN"}.union(*(LANGUAGES[code].scripts for code in languages)))
    if not languages:
        chosen |= {s for text in corpus for ch in set(text) if ch.isalpha() and (s := _script(ch))}
    no_space = chosen & NO_SPACE_SCRIPTS if languages else frozenset()
    for i, (piece, _) in enumerate(vocab):
        letters = scripts[i]
        if not letters:
            sel.add("characters", [i])
        elif len(piece.replace(WORD_MARK, "")) == 1 and (letters <= chosen or not letters & LARGE_SCRIPTS):
            sel.add("characters", [i])
        elif no_space and letters <= no_space:
            sel.add("scripts", [i])
    done: set[str] = set()
    index = _PieceIndex(vocab)
    for code in languages:
        if LANGUAGES[code].wordfreq in done:  # zh-CN and zh-TW share one list
            continue
        done.add(LANGUAGES[code].wordfreq)
        listed = words_for(code, words)
        forms = _forms(listed, code)
        sel.add("words", _tokenize_all(tokenize, forms))
        sel.add("case variants", index.case_variants(listed))
        word_initial = [f for f in forms if not f.startswith(_CONTEXT)]
        sel.add("stems", index.stems(f for f in word_initial if not f.isupper()))
        sel.add("inner pieces", index.inner(f for f in word_initial if f == f.lower()))
        log(f"{code}: {len(forms):,} word forms tokenized; {len(sel.ids):,} pieces kept so far")
    if corpus:
        sel.add("corpus", _tokenize_all(tokenize, list(corpus)))
        log(f"corpus: {len(corpus):,} lines tokenized; {len(sel.ids):,} pieces kept")
    return sel
