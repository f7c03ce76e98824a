"""Which text identifies a person: names, dates, ids, age+sex, and the file's own header values.

The detectors work on a list of tokens (OCR'd words of one text line, or the words of a caption)
and return the *kinds* found plus which tokens hold them, never a copy of the text, so callers
can redact the tokens and report the kinds without an identifier ever leaving this module.

Kinds, each chosen to be specific enough that figure text is left alone:

* ``name`` — a person-name-like pair: first name + surname from the names lexicon ("John Smith",
  "Smith, John"), a DICOM person-name ("DOE^JOHN", OCR often reads the caret as ``*`` or ``"``),
  a title + capitalised word ("Dr. Kovacs"), or a word after a name label ("Name: Kovacs").
  A single lexicon word is not enough: "Long axis", "Grace period" and eponyms ("Graves disease")
  would be flagged, and a burned-in name nearly always comes as first + last or with a label.
* ``header`` — a token equal to a value of the file's own header (PatientName parts, PatientID,
  OtherPatientIDs, InstitutionName, ReferringPhysicianName), read before the header is dropped;
  one OCR slip is forgiven on tokens of 6+ characters (OCR read 48213377 as 48233377 in testing).
* ``date`` — a calendar date or date-time in the common forms (2023-05-01, 05/01/2023, 1.5.23,
  01-MAY-2023, 1 May 2023, May 1, 2023, 20230501 beside a time); a time alone is not a date.
* ``id`` — a run of 7+ digits (after OCR's usual O/0 l/1 slips are not undone: a run is digits),
  an accession-like token (1-4 letters then 5+ digits: A12345678, ACC00123), an SSN-like
  3-2-4 pattern, or any number of 3+ digits after an id label (ID, MRN, Acc, Accession).
* ``demographics`` — an age ("45Y", "45 yo", "Age 45") with a sex ("M", "F", "male") on the same
  line, or a birth-date label (DOB, Birth).

Not flagged, by construction: panel letters (a lone A-H letter), orientation markers (L, R, A,
P, S, I, H, F), scale bars and measurements ("5 cm", "100 µm", "12.5 mm", "x20"), axis text
(words and numbers below 7 digits).

The lexicon is Faker's person-name lists for every locale that writes names in the Latin alphabet
(58 of faker 40.63's 88: 16,490 first and 19,738 last names, folded; Faker is a well-kept, widely
used package, no download at run time). Six locales gave 3,310 and 3,802: a Polish, Dutch or
Swedish patient's name was then found only with a label or a comma, and hospitals see patients of
every origin. Words that are also common in medical text are taken out of it (see `_COMMON`).

No list holds every surname: two independent lists (Faker's and mimesis's) share 1-67 % of a
locale's surnames. So a bare "Given Surname" pair is also a name when one word is in the lexicon
and the other is a capitalised word that is rare in English (wordfreq's Zipf frequency below 3,
i.e. under one in a million words; "Chmielak" 0.0, "Lindqvist" 1.7, but "Disease" 4.9, "Axial"
3.2): figure text pairs common words, a person's name pairs a given name with a rare one.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from medmix.core.errors import MedmixError

KINDS = ("name", "header", "date", "id", "demographics")

_LATIN_SHARE = 0.9     # a locale joins the lexicon when this share of its name parts fold to a-z
_RARE_ZIPF = 3.0       # below this English Zipf frequency a capitalised word may be a surname
_WORD_ZIPF = 4.0       # a given name this common in English must be a given name in 3+ locales

# Lexicon entries that are ordinary words in captions and figure text; a name made only of these
# is not a name. Lower case.
_COMMON = frozenset("""
a an and are as at be by can do for from had has have he her his in is it its may me my no not of
on or our she so the to up us we will with you your
long short small large bell price ward cross green brown white black grey gray young king hill wood
rose hope grace faith joy mark will bill may june april august summer winter autumn dawn hunter
page lane field fields church bishop mason baker cook cooper turner walker cole gold silver love
rich head little hall hart best good fine free lord major noble power sharp strong wise early
frank art carter chase dean hale ray case guy lee chance pat max bay sky star stone river west
north south east banks rivers wells marsh moore more worth well ill fall pain back bone vessel
ventral dorsal tissue normal axial sagittal coronal image figure panel scale left right top bottom
""".split())

_PARTICLES = frozenset({"van", "von", "de", "der", "den", "di", "da", "del", "della", "le", "la", "du", "dos"})
_AGE_NUMBER = re.compile(r"^(0?\d{1,2}|1[01]\d)$")
_AGE_UNIT = re.compile(r"^(y|yo|yr|yrs)[mf]?$")
_TITLES = frozenset({"dr", "mr", "mrs", "ms", "miss", "prof", "sir", "dott", "herr", "frau", "mme", "mlle"})
_NAME_LABELS = frozenset({"name", "patient", "pt", "pat", "nom", "nombre", "physician", "ref", "referring",
                          "doctor", "operator", "sonographer", "tech", "technologist"})
_ID_LABELS = frozenset({"id", "mrn", "acc", "accession", "acc#", "pid", "mr#", "no", "nr", "case", "hn", "ssn"})
_BIRTH_LABELS = frozenset({"dob", "birth", "born", "d.o.b", "geb", "birthdate"})
_SEX_TOKENS = frozenset({"m", "f", "male", "female", "sex"})
_AGE_LABELS = frozenset({"age", "aged", "alter", "edad"})

_MONTHS = ("jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|july|"
           "august|september|october|november|december")
# The numeric forms with separators take any year 1000-2999: OCR misreads one digit of a year
# ("12.01.2606" for 12.01.2006, seed 2's date miss), and day-month-year with separators is a date
# shape figure text does not have; the 8-digit form and the numbers OCR split apart (`_COMPACT_DATE`,
# joined across a line, where a looser year matched statistics in 25 PubMedQA abstracts) keep 19xx/20xx.
_DATE_RES = [re.compile(p, re.IGNORECASE) for p in (
    r"\b[12]\d\d\d[-/.](0?[1-9]|1[0-2])[-/.](0?[1-9]|[12]\d|3[01])\b",          # 2023-05-01
    r"\b(0?[1-9]|[12]\d|3[01])[-/.](0?[1-9]|1[0-2])[-/.](([12]\d)?\d\d)\b",         # 01/05/2023, 1.5.23
    r"\b(0?[1-9]|1[0-2])[-/.](0?[1-9]|[12]\d|3[01])[-/.](([12]\d)?\d\d)\b",         # 05/31/2023
    rf"\b(0?[1-9]|[12]\d|3[01])[- ]?({_MONTHS})\.?[- ,]?((19|20)\d\d|\d\d)\b",     # 01-MAY-2023, 1 May 23
    rf"\b({_MONTHS})\.?[- ]?(0?[1-9]|[12]\d|3[01])(st|nd|rd|th)?,?[- ]((19|20)\d\d)\b",  # May 1, 2023
    r"\b(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])([T ]?\d{4,6})?\b",         # 20230501, DICOM DA/DT
)]
_COMPACT_DATE = re.compile(r"(19|20)\d\d[-/.](0?[1-9]|1[0-2])[-/.](0?[1-9]|[12]\d|3[01])"
                           r"|(0?[1-9]|[12]\d|3[01])[-/.](0?[1-9]|1[0-2])[-/.](19|20)\d\d"
                           r"|(0?[1-9]|1[0-2])[-/.](0?[1-9]|[12]\d|3[01])[-/.](19|20)\d\d")
_LONG_DIGITS = re.compile(r"\d{7,}")
_ACCESSION = re.compile(r"^[A-Za-z]{1,4}[-#]?\d{5,}[A-Za-z]?$")
_SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
_AGE = re.compile(r"^(0?\d{1,2}|1[01]\d)(y|yo|yr|yrs|y/o|years?|j|a|ans)?([mf])?$", re.IGNORECASE)
_AGE_SEX = re.compile(r"^(0?\d{1,2}|1[01]\d)\s?(y|yo|yr|yrs)[mf]$", re.IGNORECASE)
_CARETS = "^*\"“”'`"
_CARET_NAME = re.compile(r"^[A-Za-z][A-Za-z'-]+[\^*\"“”'`][A-Za-z][A-Za-z'-]+$")  # both parts 2+ letters
# an OCR split at a caret read as ^ or *; one read as a quote mark counts only in capitals
# ("DOE” JOHN"): a closing quote between two words ("Beta” Pre") was OCR noise, seed 2
_CARET_SPLIT_ANY = re.compile(r"[\^*]")
# typed text has the caret itself: its quotes are quotes ("the 'high-risk' group", PubMedQA)
_TYPED_CARET_NAME = re.compile(r"^[A-Za-z][A-Za-z'-]*[A-Za-z]\^[A-Za-z][A-Za-z'-]+$")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Finding:
    """The kinds found in one token list and the indices of the tokens that carry them."""

    kinds: frozenset[str]
    tokens: frozenset[int]

    def __bool__(self) -> bool:
        return bool(self.kinds)


def fold(text: str) -> str:
    """Case- and accent-free letters and digits only: "Müller," → "muller"."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if c.isalnum() and not unicodedata.combining(c)).casefold()


@functools.lru_cache(maxsize=1)
def lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, last names), folded, from Faker's person providers; common words removed."""
    import importlib

    try:
        importlib.import_module("faker")
    except ImportError:
        raise MedmixError("identifying-text detection needs the names lexicon of the `faker` package, which is "
                          "not installed; `pip install medmix[phi]`, or set `image.burned_in_text: off`") from None
    names = _locale_names().values()
    first = {f for given, _ in names for f in given if len(f) >= 2 and f not in _COMMON}
    last = {f for _, family in names for f in family if len(f) >= 2 and f not in _COMMON}
    return frozenset(first), frozenset(last)


@functools.lru_cache(maxsize=1)
def _locale_names() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Faker person locale → (given, family) name parts, folded; one read of the providers serves
    the lexicon, `latin_locales` and `given_name_locales`. Only locales whose first and last names
    fold to a-z (`_LATIN_SHARE` of their parts): OCR reads the Latin alphabet (`eng` data), so
    names in other scripts could not match what it reads."""
    import importlib
    import pkgutil

    import faker.providers.person as person

    out = {}
    for mod in sorted(m.name for m in pkgutil.iter_modules(person.__path__)):
        provider = importlib.import_module(f"faker.providers.person.{mod}").Provider
        parts = [p for attr in ("first_names", "last_names") for n in _names(provider, attr)
                 for p in re.split(r"[\s-]+", n) if p]
        if not parts or sum(bool(re.fullmatch(r"[a-z]+", fold(p))) for p in parts) < _LATIN_SHARE * len(parts):
            continue
        given = frozenset(fold(p) for attr in ("first_names", "first_names_male", "first_names_female")
                          for n in _names(provider, attr) for p in re.split(r"[\s-]+", n))
        family = frozenset(fold(p) for n in _names(provider, "last_names") for p in re.split(r"[\s-]+", n))
        out[mod] = (given, family)
    return out


def latin_locales() -> tuple[str, ...]:
    """The Faker locales the lexicon reads (see `_locale_names`)."""
    return tuple(_locale_names())


def _names(provider: type, attr: str) -> list[str]:
    """A provider's name list: a tuple, or a dict of name → weight; absent or a property gives none."""
    value = getattr(provider, attr, None)
    if value is None or isinstance(value, property):
        return []
    return [str(n) for n in value]


@functools.lru_cache(maxsize=1)
def given_name_locales() -> dict[str, int]:
    """Folded given name → how many locales list it. A name in many locales ("john": 20) is a
    name; one that a single list holds and English uses as a word ("brain", "royal": Faker's `en`
    baby names) is more likely the word."""
    count: dict[str, int] = {}
    for given, _ in _locale_names().values():
        for f in given:
            count[f] = count.get(f, 0) + 1
    return count


def _zipf():
    """wordfreq's `zipf_frequency`, or the install hint; its data ships in the wheel."""
    try:
        from wordfreq import zipf_frequency
    except ImportError:
        raise MedmixError("identifying-text detection needs the `wordfreq` package, which is not installed; "
                          "`pip install medmix[phi]`, or set `image.burned_in_text: off`") from None
    return zipf_frequency


@functools.lru_cache(maxsize=65536)
def rare_word(word: str, below: float = _RARE_ZIPF) -> bool:
    """A word rarer in English text than Zipf `below` (3: one in a million words), as most
    surnames are."""
    return _zipf()(word.casefold(), "en") < below


def lexicon_source() -> str:
    """What the manifest records about the lexicon."""
    from importlib.metadata import version

    first, last = lexicon()
    _zipf()  # the install hint when wordfreq is missing
    return (f"faker {version('faker')} person names ({len(latin_locales())} Latin-alphabet locales): "
            f"{len(first)} first, {len(last)} last; wordfreq {version('wordfreq')} English frequencies")


class HeaderValues:
    """Tokens of the file's own identifying header values, folded; empty for non-DICOM input."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        tokens: set[str] = set()
        for value in values:
            for part in _WORD.findall(str(value)):
                f = fold(part)
                if len(f) >= 3 and f not in _COMMON and f not in _GENERIC_INSTITUTION:
                    tokens.add(f)
        self.tokens = frozenset(tokens)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def matches(self, token: str) -> bool:
        f = fold(token)
        if len(f) < 3:
            return False
        if f in self.tokens:
            return True
        return len(f) >= 6 and any(abs(len(t) - len(f)) <= 1 and _within_one(f, t) for t in self.tokens
                                   if len(t) >= 6)


_GENERIC_INSTITUTION = frozenset({"hospital", "clinic", "medical", "center", "centre", "university", "general",
                                  "health", "institute", "department", "radiology", "imaging", "the", "and",
                                  "saint", "care", "county", "city", "regional", "memorial", "children"})


def _within_one(a: str, b: str) -> bool:
    """Edit distance <= 1 (one OCR slip: a wrong, missing or extra character)."""
    if a == b:
        return True
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) <= 1
    if len(a) > len(b):
        a, b = b, a
    return any(b[:i] + b[i + 1:] == a for i in range(len(b)))


def classify(tokens: Sequence[str], header: HeaderValues | None = None, *, ocr: bool = True) -> Finding:
    """The identifier kinds in one line of tokens and the token indices that carry them. `ocr`:
    the tokens were read from pixels, where a DICOM caret may come back as a quote or asterisk."""
    first, last = lexicon()
    caret_name = _CARET_NAME if ocr else _TYPED_CARET_NAME
    kinds: set[str] = set()
    hit: set[int] = set()
    folded = [fold(t) for t in tokens]
    line = " ".join(tokens)

    def mark(kind: str, *idx: int) -> None:
        kinds.add(kind)
        hit.update(idx)

    for i, tok in enumerate(tokens):
        f = folded[i]
        bare = tok.strip(".,;:()[]{}")
        if header and header.matches(tok):
            mark("header", i)
        if caret_name.match(bare) and sum(c.isalpha() for c in bare) >= 5:  # not OCR noise like "ge“D"
            mark("name", i)
        joined = bare + tokens[i + 1].strip(".,;:") if i + 1 < len(tokens) else ""
        if (ocr and joined and _CARET_NAME.match(joined) and sum(c.isalpha() for c in joined) >= 5
                and (bare[-1:] in _CARETS or tokens[i + 1][:1] in _CARETS)
                and bare[:1].isupper() and tokens[i + 1].lstrip(_CARETS)[:1].isupper()
                and (_CARET_SPLIT_ANY.search(joined) or joined.upper() == joined)):  # OCR split "DOE^ JOHN"
            mark("name", i, i + 1)
        digits = re.sub(r"[^\d]", "", bare)
        if _LONG_DIGITS.search(bare) or _SSN.match(bare) or (_ACCESSION.match(bare) and not _is_unitlike(bare)):
            if not _date_only(bare):
                mark("id", i)
        prev = folded[i - 1] if i else ""
        if prev.rstrip("#") in _ID_LABELS and len(digits) >= 3 and len(digits) >= len(bare.strip("#-")) - 2:
            mark("id", i - 1, i)
        if f in _BIRTH_LABELS:
            mark("demographics", i, *range(i + 1, min(i + 4, len(tokens))))
        if f in _TITLES and _title_then_name(tok, tokens[i + 1] if i + 1 < len(tokens) else "", ocr):
            mark("name", i, i + 1)
        if f in _NAME_LABELS and tok.rstrip().endswith(":") and i + 1 < len(tokens) and _alpha(tokens[i + 1]):
            mark("name", i, *[j for j in range(i + 1, min(i + 4, len(tokens))) if _alpha(tokens[j])])
        if i + 1 < len(tokens) and _capitalised(tok) and _capitalised(tokens[i + 1]):
            g = folded[i + 1]
            if (_given(tok, first) and g in last) or (tok.endswith(",") and f in last
                                                      and _given(tokens[i + 1], first)
                                                      and _one_case(bare, tokens[i + 1].strip(".,;:"))):
                mark("name", i, i + 1)
            elif (tok.endswith(",") and len(bare) >= 3 and bare.replace("-", "").replace("'", "").isalpha()
                  and _given(tokens[i + 1], first) and (ocr or _name_shaped(bare))):
                # "Andersson, John": the inverted "Surname, Given" of a record needs only the given
                # name in the lexicon; the comma is the evidence a bare pair ("Left Kidney") lacks
                mark("name", i, i + 1)
            elif not tok.endswith(",") and _given_and_rare(tok, tokens[i + 1], first, caps=ocr):
                mark("name", i, i + 1)
        if (i + 2 < len(tokens) and _capitalised(tok) and _given(tok, first) and folded[i + 1] in _PARTICLES
                and _capitalised(tokens[i + 2])):  # "Mick van Esten", "Maxim de Backer"
            mark("name", i, i + 1, i + 2)
        if (i + 1 < len(tokens) and _AGE_NUMBER.match(bare) and _AGE_UNIT.match(folded[i + 1])
                and folded[i + 1][-1] in "mf" and folded[i + 1] != "ym"):  # "55 yoM": age and sex in one word
            # not "ym": OCR reads a scale bar's "50 µm" as "50 ym" (2 false flags of 105, seed 1)
            mark("demographics", i, i + 1)
        if _AGE_SEX.match(bare):
            mark("demographics", i)
    # age + sex anywhere on the line
    ages = [i for i, t in enumerate(tokens) if _is_age(t, tokens, i)]
    sexes = [i for i, f in enumerate(folded) if f in _SEX_TOKENS and i not in ages]
    if ages and sexes:
        mark("demographics", *ages, *sexes)
    # dates, over the joined line (they span tokens: "1 May 2023")
    for rx in _DATE_RES:
        for m in rx.finditer(line):
            mark("date", *_tokens_in(tokens, m.start(), m.end()))
    # OCR splits a date at its separators ("12-APR- 2015"): the line with those spaces closed
    closed = re.sub(r"\s*([-/.])\s*", r"\1", line)
    if closed != line and "date" not in kinds and any(rx.search(closed) for rx in _DATE_RES):
        mark("date", *[i for i, t in enumerate(tokens) if any(c.isdigit() for c in t)
                        or re.match(_MONTHS, t, re.IGNORECASE)])
    # OCR splits monospaced or letter-spaced overlays ("1 9 . 0 8 . 2 0 0 8") and reads a dot as a
    # comma ("14,06. 2008"): the line without spaces gets the strict numeric forms (4-digit year)
    numeric = [i for i, t in enumerate(tokens) if re.fullmatch(r"[\d.,/:-]+", t)]
    compact = "".join(tokens[i] for i in numeric).replace(",", ".")
    if ocr and "date" not in kinds and len(numeric) >= 2:  # typed text is not letter-spaced
        if _COMPACT_DATE.search(compact):
            mark("date", *numeric)
        elif _LONG_DIGITS.search(compact.replace(".", "")) and sum(len(tokens[i]) == 1 for i in numeric) >= 4:
            mark("id", *numeric)
    return Finding(frozenset(kinds), frozenset(hit))


# Given names of the lexicon that are also medical words, listed in a caption or label after a
# comma ("Cornea, Iris", "Mutation, Gene"): not enough, with only a comma, to call a pair a name.
_MEDICAL_GIVEN = frozenset({"iris", "gene", "flora", "pia", "ana", "ada", "sam", "hazel"})


def _given(tok: str, first: frozenset[str]) -> bool:
    """A given name of the lexicon, hyphenated ones by any part ("Sven-Erik"), not a medical word,
    and not an English word that only one locale's list holds as a name ("Among", "Brain")."""
    parts = {fold(p) for p in tok.strip(".,;:").split("-")} - {""}
    named = parts & first
    return bool(named) and not parts & _MEDICAL_GIVEN and any(
        given_name_locales().get(p, 0) >= 3 or rare_word(p, _WORD_ZIPF) for p in named)


def _one_case(a: str, b: str) -> bool:
    """Both words in capitals ("LI, WEI") or both name-shaped ("Li, Wei"): an overlay writes a
    name in one style; "Se, WES" was OCR noise on a redacted texture (seeds 1 and 2)."""
    return (a.isupper() and b.isupper()) or (_name_shaped(a) and _name_shaped(b))


def _title_then_name(title: str, nxt: str, ocr: bool = True) -> bool:
    """"Dr. Kovacs", "Mr Wu", "MRS SMITH": a title, then a capitalised word. Not "ms, Ad" (OCR
    noise on a textured picture, 4 of 5 redacted canaries flagged again, seed 0) and not "MR ER":
    all-caps MR and MS are also the modality and multiple sclerosis, so their name needs 3+
    letters, and a title followed by a comma is not one. In typed text an all-caps "MR" is the
    modality ("MR Diagnosis", PubMedQA)."""
    if title.endswith(",") or not _capitalised(nxt) or (not ocr and title.strip(".").isupper()):
        return False
    return not (title.strip(".").isupper() and len(nxt.strip(".,;:")) < 3)


def _given_and_rare(tok: str, nxt: str, first: frozenset[str], caps: bool) -> bool:
    """"Filip Chmielak", "KAZIMIERZ MLOCEK": a bare pair of a given name of the lexicon and a
    name-shaped word rare in English. Measured on 1.7M characters of real medical text (PubMedQA's
    1,000 abstracts, 1,500 MedQuAD files): each guard below removed false flags seen there. `caps`:
    an all-caps pair counts (an overlay's "DOE JOHN"); in typed text all caps are acronyms."""
    a, b = tok.strip(".,;:"), nxt.strip(".,;:")
    if len(a) < 3 or len(b) < 3:
        return False
    if not (caps and a.isupper() and b.isupper()) and not (_name_shaped(a) and _name_shaped(b)):
        return False  # "Among SSI", "Red CMXRos": an acronym beside a word is not a name
    return _given(a, first) and fold(b) not in _COMMON and rare_word(b)


def _name_shaped(word: str) -> bool:
    """Capitalised parts, each lower case after its first letter or a Mc/Mac: "Młocek", "O'Neil",
    "Sven-Erik", "McKay"; not "CMXRos" or "mRNA"."""
    parts = [p for p in re.split(r"[-'’]", word) if p]
    return bool(parts) and all(p[0].isupper() and (not p[1:] or p[1:].islower()
                                                   or re.fullmatch(r"a?c[A-Z][^\W\d_]+", p[1:]) is not None)
                               for p in parts)


def _is_age(tok: str, tokens: Sequence[str], i: int) -> bool:
    bare = tok.strip(".,;:()")
    prev = fold(tokens[i - 1]) if i else ""
    m = _AGE.match(bare)
    if not m:
        # after an age label, a number OCR ran into the next word is still the age: "Age: 63pex: M"
        # ("63 Sex:"), seed 0's one demographics miss read that way in every pass
        return prev in _AGE_LABELS and re.match(r"(0?\d{1,2}|1[01]\d)(?!\d)[^\W\d_]", bare) is not None
    if m.group(2) or m.group(3):
        return True
    if i + 1 < len(tokens) and fold(tokens[i + 1]) in ("y", "yo", "yr", "yrs", "year", "years", "ans", "jahre"):
        return True  # "55 yo"
    return prev in _AGE_LABELS


def _date_only(tok: str) -> bool:
    return any(rx.fullmatch(tok) for rx in _DATE_RES[-1:])


def _is_unitlike(tok: str) -> bool:
    """"x40000"-style magnifications and "mm12345" are not ids."""
    return tok[:1].lower() == "x" and tok[1:].isdigit()


def _capitalised(tok: str) -> bool:
    t = tok.strip(".,;:")
    return len(t) >= 2 and t[0].isupper() and t.replace("-", "").replace("'", "").isalpha()


def _alpha(tok: str) -> bool:
    t = tok.strip(".,;:^")
    return len(t) >= 2 and any(c.isalpha() for c in t)


def _tokens_in(tokens: Sequence[str], start: int, end: int) -> list[int]:
    out, pos = [], 0
    for i, tok in enumerate(tokens):
        lo, hi = pos, pos + len(tok)
        if lo < end and hi > start:
            out.append(i)
        pos = hi + 1
    return out


def scan_text(text: str, header: HeaderValues | None = None) -> tuple[frozenset[str], list[tuple[int, int]]]:
    """Kinds found in free text and the character spans to redact, line by line."""
    kinds: set[str] = set()
    spans: list[tuple[int, int]] = []
    offset = 0
    for raw_line in text.splitlines(keepends=True):
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", raw_line)]
        found = classify([raw_line[a:b] for a, b in words], header, ocr=False)
        if found:
            kinds |= found.kinds
            spans.extend((offset + words[i][0], offset + words[i][1]) for i in sorted(found.tokens))
        offset += len(raw_line)
    return frozenset(kinds), spans


def redact_text(text: str, spans: Sequence[tuple[int, int]], mark: str = "[REDACTED]") -> str:
    """`text` with each span (merged where adjacent words touch) replaced by `mark`."""
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + 1 and not text[merged[-1][1]:a].strip():
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, pos = [], 0
    for a, b in merged:
        out.append(text[pos:a])
        out.append(mark)
        pos = b
    out.append(text[pos:])
    return "".join(out)


def kinds_label(kinds: Iterable[str]) -> str:
    """"date, id" — the only form in which findings leave this package."""
    return ", ".join(k for k in KINDS if k in set(kinds))


def header_values(mapping: Mapping[str, object]) -> HeaderValues:
    return HeaderValues(str(v) for v in mapping.values() if v)
