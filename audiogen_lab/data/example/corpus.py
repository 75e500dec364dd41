"""Score collections of the music21 corpus and seeded drawing of candidate scores.

A `Collection` groups corpus files sharing composer, genre and orchestration style; the catalogue lists
every usable score (or numbered tune) of each collection, and `CandidateDrawer` draws distinct scores,
a collection by weight first.
"""
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
import random
import re
import typing as tp


@dataclass(frozen=True)
class Collection:
    """A family of corpus files sharing composer, genre and style.

    Attributes:
        name: short identifier used in summaries.
        patterns: globs on corpus-relative paths (e.g. 'bach/bwv*.mxl').
        composer: full composer name ('traditional' for folk music).
        composer_short: the name used in captions ('Bach').
        genre: the default genre phrase ('chorale').
        style: key of `STYLES`.
        weight: relative probability of drawing from this collection.
        genres: (regex on the file name, genre) pairs overriding `genre`; the first match wins.
        exclude: globs of files to leave out.
        max_kib: larger files are left out (slow to parse).
        opus: files hold many numbered tunes (abc `X:` fields); each tune is one candidate.
    """
    name: str
    patterns: tp.Tuple[str, ...]
    composer: str
    composer_short: str
    genre: str
    style: str
    weight: float
    genres: tp.Tuple[tp.Tuple[str, str], ...] = ()
    exclude: tp.Tuple[str, ...] = ()
    max_kib: int = 64
    opus: bool = False

    def genre_of(self, rel_path: str) -> str:
        name = rel_path.rsplit('/', 1)[-1]
        for regex, genre in self.genres:
            if re.search(regex, name):
                return genre
        return self.genre


def _piece(name: str, path: str, composer: str, short: str, genre: str, style: str) -> Collection:
    return Collection(name, (path,), composer, short, genre, style, weight=0.006, max_kib=128)


COLLECTIONS: tp.Tuple[Collection, ...] = (
    Collection('bach_chorales', ('bach/bwv*.mxl',), 'Johann Sebastian Bach', 'Bach', 'chorale',
               'chorale', 0.20, max_kib=24),
    Collection('palestrina', ('palestrina/*.krn',), 'Giovanni Pierluigi da Palestrina', 'Palestrina',
               'mass movement', 'renaissance', 0.12,
               genres=(('^Agnus', 'Agnus Dei'), ('^Kyrie', 'Kyrie'), ('^Gloria', 'Gloria'),
                       ('^Credo', 'Credo'), ('^Sanctus', 'Sanctus'), ('^Benedictus', 'Benedictus'))),
    Collection('monteverdi', ('monteverdi/madrigal.*.mxl',), 'Claudio Monteverdi', 'Monteverdi',
               'madrigal', 'renaissance', 0.08),
    Collection('haydn_quartets', ('haydn/*/movement*.mxl',), 'Joseph Haydn', 'Haydn',
               'string quartet movement', 'quartet', 0.04),
    Collection('mozart_quartets', ('mozart/k80/*.mxl', 'mozart/k155/*.mxl', 'mozart/k156/*.mxl',
                                   'mozart/k458/*.mxl'), 'Wolfgang Amadeus Mozart', 'Mozart',
               'string quartet movement', 'quartet', 0.04),
    Collection('beethoven_quartets', ('beethoven/opus18no1/*.mxl', 'beethoven/opus59no*/*.mxl'),
               'Ludwig van Beethoven', 'Beethoven', 'string quartet movement', 'quartet', 0.04,
               max_kib=80),
    Collection('ryans_mammoth', ('ryansMammoth/*.abc',), 'traditional', 'traditional', 'dance tune',
               'folk_dance', 0.14,
               genres=(('Slipjig', 'slip jig'), ('Reel', 'reel'), ('Jig', 'jig'),
                       ('Hornpipe', 'hornpipe'), ('Strathspey', 'strathspey'), ('Clog', 'clog dance'),
                       ('Fling', 'Highland fling'), ('March', 'march'), ('Waltz', 'waltz'))),
    Collection('essen_folksongs', ('essenFolksong/*.abc',), 'traditional', 'traditional',
               'German folk song', 'folk_song', 0.10, opus=True, max_kib=1024,
               exclude=('essenFolksong/test*', 'essenFolksong/variant*', 'essenFolksong/folkHaydn*'),
               genres=(('^ballad', 'German folk ballad'), ('^kinder', "German children's song"),
                       ('^han', 'Chinese folk song'), ('^irl', 'Irish folk song'),
                       ('^lux', 'Luxembourgish folk song'), ('^lot', 'Lorraine folk song'))),
    Collection('oneills_1850', ('oneills1850/*.abc',), 'traditional', 'traditional', 'Irish folk tune',
               'folk_dance', 0.07, opus=True, max_kib=1024),
    Collection('airds_airs', ('airdsAirs/*.abc',), 'traditional', 'traditional', 'Scottish air',
               'folk_song', 0.03, opus=True, max_kib=1024),
    _piece('joplin', 'joplin/maple_leaf_rag.mxl', 'Scott Joplin', 'Joplin', 'ragtime', 'keyboard'),
    _piece('chopin', 'chopin/mazurka06-2.krn', 'Frederic Chopin', 'Chopin', 'mazurka', 'keyboard'),
    _piece('handel', 'handel/rinaldo/Lascia_chio_pianga.mxl', 'George Frideric Handel', 'Handel',
           'Baroque aria', 'song'),
    _piece('verdi', 'verdi/laDonnaEMobile.mxl', 'Giuseppe Verdi', 'Verdi', 'opera aria', 'song'),
    _piece('corelli', 'corelli/opus3no1/1grave.xml', 'Arcangelo Corelli', 'Corelli',
           'trio sonata movement', 'chorale'),
    _piece('cpebach', 'cpebach/h186.mxl', 'Carl Philipp Emanuel Bach', 'C. P. E. Bach',
           'keyboard piece', 'keyboard'),
    _piece('clara_schumann', 'schumann_clara/polonaise_op1n*.mxl', 'Clara Schumann', 'Clara Schumann',
           'polonaise', 'keyboard'),
    _piece('liliuokalani', 'liliuokalani/aloha_oe.mxl', 'Liliuokalani', 'Liliuokalani', 'Hawaiian song',
           'chorale'),
    _piece('johnson', 'johnson_j_r/lift_every_voice.mxl', 'J. Rosamond Johnson', 'Johnson', 'hymn',
           'chorale'),
    _piece('robert_schumann', 'schumann_robert/dichterliebe_no2.xml', 'Robert Schumann', 'Schumann',
           'art song', 'song'),
)


@dataclass(frozen=True)
class ScoreCandidate:
    """One corpus score that may become a music clip: collection name, corpus-relative path, tune number."""
    collection: str
    path: str
    number: tp.Optional[int] = None

    @property
    def source(self) -> str:
        suffix = f"#{self.number}" if self.number is not None else ''
        return f"music21:{self.path}{suffix}"


def corpus_root() -> Path:
    """The folder of music21's core corpus, which corpus-relative paths start from."""
    from music21 import common
    return Path(common.getCorpusFilePath())


def collection_by_name(name: str) -> Collection:
    """The collection of `COLLECTIONS` called `name`."""
    for coll in COLLECTIONS:
        if coll.name == name:
            return coll
    raise KeyError(f"Unknown score collection {name!r}.")


def corpus_catalogue(collections: tp.Sequence[Collection] = COLLECTIONS) -> tp.Dict[str, tp.List[ScoreCandidate]]:
    """List the candidate scores of each collection, in a stable order.

    Reads `music21.corpus.getPaths()` and, for files holding many tunes, their `X:` tune numbers.
    """
    from music21 import corpus
    root = corpus_root()
    rel_paths = []
    for path in corpus.getPaths():
        try:
            rel_paths.append((Path(path).relative_to(root).as_posix(), Path(path)))
        except ValueError:  # a user corpus outside the core corpus
            continue
    rel_paths.sort()
    catalogue: tp.Dict[str, tp.List[ScoreCandidate]] = {}
    for coll in collections:
        items: tp.List[ScoreCandidate] = []
        for rel, full in rel_paths:
            if not any(fnmatch(rel, p) for p in coll.patterns) or any(fnmatch(rel, p) for p in coll.exclude):
                continue
            if full.stat().st_size > coll.max_kib * 1024:
                continue
            if coll.opus:
                text = full.read_text(encoding='latin-1')
                numbers = sorted({int(n) for n in re.findall(r'^X:\s*(\d+)', text, re.M)})
                items.extend(ScoreCandidate(coll.name, rel, n) for n in numbers)
            else:
                items.append(ScoreCandidate(coll.name, rel))
        if items:
            catalogue[coll.name] = items
    return catalogue


class CandidateDrawer:
    """Draw distinct score candidates: a collection by weight, then a score of it without replacement."""

    def __init__(self, catalogue: tp.Dict[str, tp.List[ScoreCandidate]], seed: int):
        self.rng = random.Random(f"example-dataset-scores-{seed}")
        self.remaining = {name: list(items) for name, items in catalogue.items()}
        self.weights = {c.name: c.weight for c in COLLECTIONS}

    def draw(self) -> ScoreCandidate:
        names = [n for n, items in self.remaining.items() if items]
        if not names:
            raise RuntimeError("The music21 corpus ran out of usable scores: ask for fewer clips.")
        name = self.rng.choices(names, weights=[self.weights.get(n, 0.01) for n in names])[0]
        items = self.remaining[name]
        idx = self.rng.randrange(len(items))
        items[idx], items[-1] = items[-1], items[idx]
        return items.pop()
