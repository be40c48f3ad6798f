#!/usr/bin/env python
"""Regenerate the concept vocabularies shipped in this folder.

    python concepts/build_vocab.py            # rewrites the .txt files next to this script
    python concepts/build_vocab.py --check    # rebuilds in memory and fails if a shipped file differs

Inputs (all offline-installable; none of them is needed at run time by weightscope):
- Princeton WordNet 3.0 data files, as installed by Debian's ``wordnet-base`` package
  (``apt-get install wordnet-base`` -> /usr/share/wordnet; override with --wordnet-dir or $WORDNET_DIR).
  The files are parsed directly (format: wndb(5)); no nltk.
- ``wordfreq`` (PyPI, data CC BY-SA 4.0) for English word/phrase frequencies, used to rank and filter.
- ``open_clip`` for the ImageNet-1k class names (``open_clip.IMAGENET_CLASSNAMES``).
- The hand-written lists below (colours, shapes and positions, textures and materials, numbers,
  typography, styles, CIFAR class names).

The output is deterministic for fixed input versions: every set is sorted before it is written and
frequency ties are broken alphabetically. shapes_world.txt is written by a different tool and is
not touched here.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# WordNet parsing (wndb(5) format)
# ---------------------------------------------------------------------------------------------

# Lexicographer file numbers of WordNet 3.0 (lexnames(5)); used to keep or drop whole domains.
LEXNAMES = {
    3: "noun.Tops", 4: "noun.act", 5: "noun.animal", 6: "noun.artifact", 7: "noun.attribute",
    8: "noun.body", 9: "noun.cognition", 10: "noun.communication", 11: "noun.event",
    12: "noun.feeling", 13: "noun.food", 14: "noun.group", 15: "noun.location", 16: "noun.motive",
    17: "noun.object", 18: "noun.person", 19: "noun.phenomenon", 20: "noun.plant",
    21: "noun.possession", 22: "noun.process", 23: "noun.quantity", 24: "noun.relation",
    25: "noun.shape", 26: "noun.state", 27: "noun.substance", 28: "noun.time",
    29: "verb.body", 30: "verb.change", 31: "verb.cognition", 32: "verb.communication",
    33: "verb.competition", 34: "verb.consumption", 35: "verb.contact", 36: "verb.creation",
    37: "verb.emotion", 38: "verb.motion", 39: "verb.perception", 40: "verb.possession",
    41: "verb.social", 42: "verb.stative", 43: "verb.weather", 0: "adj.all", 1: "adj.pert",
    2: "adv.all", 44: "adj.ppl",
}

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


@dataclass
class Synset:
    offset: int
    pos: str          # n, v, a, s (adjective satellite), r
    lexname: str
    lemmas: list      # surface forms, underscores turned into spaces, adjective markers removed
    pointers: list    # (symbol, target offset, target pos)
    gloss: str


class WordNet:
    """Just enough of WordNet: synsets by offset, sense lists by lemma, hyponym closure."""

    def __init__(self, root: Path):
        if not (root / "data.noun").is_file():
            sys.exit(f"WordNet data not found in {root}: install Debian's wordnet-base "
                     "(apt-get install wordnet-base) or pass --wordnet-dir")
        self.root = root
        self.synsets = {p: self._read_data(p) for p in ("n", "v", "a")}
        self.index = {p: self._read_index(p) for p in ("n", "v", "a")}
        self.tag_counts = self._read_tag_counts()

    def _read_data(self, pos: str) -> dict:
        out = {}
        with open(self.root / f"data.{POS_FILES[pos]}", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" "):     # licence header lines start with two spaces
                    continue
                body, _, gloss = line.partition(" | ")
                f = body.split()
                offset, lexnum, ss_type, w_cnt = int(f[0]), int(f[1]), f[2], int(f[3], 16)
                words = f[4:4 + 2 * w_cnt:2]
                i = 4 + 2 * w_cnt
                p_cnt = int(f[i])
                ptrs = []
                for k in range(p_cnt):
                    sym, tgt, tpos = f[i + 1 + 4 * k: i + 4 + 4 * k]
                    ptrs.append((sym, int(tgt), "a" if tpos == "s" else tpos))
                lemmas = [re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ") for w in words]
                out[offset] = Synset(offset, ss_type, LEXNAMES.get(lexnum, str(lexnum)), lemmas, ptrs,
                                     gloss.strip())
        return out

    def _read_index(self, pos: str) -> dict:
        out = {}
        with open(self.root / f"index.{POS_FILES[pos]}", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                f = line.split()
                synset_cnt, p_cnt = int(f[2]), int(f[3])
                offsets = [int(x) for x in f[4 + p_cnt + 2:]]
                assert len(offsets) == synset_cnt, line
                out[f[0]] = offsets
        return out

    def _read_tag_counts(self) -> dict:
        """lemma -> [(pos number, lexname, count)]: how often each sense was tagged in the
        SemCor corpus (cntlist.rev; sense key = lemma%ss_type:lex_filenum:...)."""
        out = {}
        with open(self.root / "cntlist.rev", encoding="utf-8") as fh:
            for line in fh:
                key, _num, count = line.split()
                lemma, _, rest = key.partition("%")
                ss_type, lexnum = rest.split(":")[:2]
                out.setdefault(lemma, []).append((int(ss_type), LEXNAMES[int(lexnum)], int(count)))
        return out

    def sense_share(self, lemma: str, pos_number: int, lexnames: set) -> float | None:
        """Fraction of the tagged uses of ``lemma`` (all parts of speech) that are senses of
        ``pos_number`` (1 = noun) in ``lexnames``; None when the lemma was never tagged."""
        counts = self.tag_counts.get(lemma.lower().replace(" ", "_"), [])
        total = sum(c for _, _, c in counts)
        if total == 0:
            return None
        return sum(c for p, lx, c in counts if p == pos_number and lx in lexnames) / total

    def lookup(self, name: str) -> Synset:
        """'dog.n.01' -> the synset of the first noun sense of 'dog' (sense order of index.noun)."""
        lemma, pos, num = name.rsplit(".", 2)
        return self.synsets[pos][self.index[pos][lemma][int(num) - 1]]

    def hyponym_closure(self, roots, exclude=(), instances: bool = True) -> set:
        """Offsets of the noun synsets below ``roots`` (inclusive) via hyponym (and instance) links,
        not descending into ``exclude``."""
        syms = {"~", "~i"} if instances else {"~"}
        stop = {s.offset for s in exclude}
        seen, stack = set(), [s.offset for s in roots]
        while stack:
            off = stack.pop()
            if off in seen or off in stop:
                continue
            seen.add(off)
            stack.extend(t for sym, t, p in self.synsets["n"][off].pointers if sym in syms and p == "n")
        return seen

    def senses(self, lemma: str):
        """Every synset (any pos) that lists ``lemma`` (case-insensitive, spaces or underscores)."""
        key = lemma.lower().replace(" ", "_")
        for pos in ("n", "v", "a"):
            for off in self.index[pos].get(key, []):
                yield self.synsets[pos][off]


# ---------------------------------------------------------------------------------------------
# Hand-written lists (written for this project; facts such as dataset class names are not creative)
# ---------------------------------------------------------------------------------------------

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# CIFAR-100 fine labels in label-index order, underscores replaced by spaces.
CIFAR100 = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
CIFAR100 = [c.replace("_", " ") for c in CIFAR100]

COLORS = """red | orange | yellow | green | blue | purple | pink | brown | black | white | gray |
dark red | light red | dark orange | dark yellow | light yellow | dark green | light green |
dark blue | light blue | dark purple | light purple | dark pink | light pink | dark brown |
light brown | dark gray | light gray | crimson | scarlet | maroon | burgundy | vermilion | cherry red |
blood red | brick red | coral | salmon | peach | apricot | tangerine | amber | gold | golden |
mustard | lemon yellow | canary yellow | lime green | olive | olive green | chartreuse | emerald |
emerald green | jade | mint green | sage green | forest green | neon green | teal | turquoise | cyan |
aqua | azure | sky blue | baby blue | navy blue | royal blue | cobalt blue | electric blue |
indigo | sapphire | violet | lavender | lilac | mauve | plum | magenta | fuchsia | hot pink | rose |
pastel pink | beige | tan | khaki | taupe | chocolate brown | coffee brown | caramel | chestnut |
rust | copper | bronze | ivory | cream | off-white | silver | charcoal | slate gray | jet black |
pure white | snow white | sepia | pastel colors | neon colors | earth tones | warm colors |
cool colors | bright colors | muted colors | dark colors | light colors | monochrome |
black and white | grayscale | rainbow colors | multicolored | colorful | colorless | transparent |
translucent | metallic | iridescent | fluorescent | gradient | two-tone | red and white |
blue and white | black and yellow | red and black | green and white | blue and yellow |
orange and black | pink and purple""".replace("\n", " ").split("|")

SHAPES_POSITIONS = """circle | square | triangle | rectangle | oval | ellipse | diamond shape | star shape |
heart shape | hexagon | pentagon | octagon | crescent | cross | arrow | spiral | ring | semicircle |
trapezoid | parallelogram | rhombus | polygon | cube | sphere | cylinder | cone | pyramid | prism |
torus | disk | straight line | curved line | dotted line | dashed line | zigzag line | wavy line |
thick line | thin line | dot | point | blob | outline | silhouette | filled shape | hollow shape |
round | square-shaped | triangular | rectangular | circular | oval-shaped | curved | straight |
pointed | angular | jagged | symmetrical | asymmetrical | irregular shape | geometric shapes |
tiny | small | medium-sized | large | huge | giant | miniature | tall | short | wide | narrow | long |
thick | thin | flat | deep | on the left | on the right | at the top | at the bottom | in the center |
in the middle | in the top left corner | in the top right corner | in the bottom left corner |
in the bottom right corner | left side | right side | top half | bottom half | upper left |
upper right | lower left | lower right | in the foreground | in the background | above | below |
beside | next to | behind | in front of | inside | outside | between | on top of | underneath |
far away | nearby | close-up | zoomed in | zoomed out | cropped | centered | off-center |
at the edge | in the corner | horizontal | vertical | diagonal | tilted | rotated | upside down |
mirrored | overlapping | stacked | scattered | aligned in a row | in a grid | in a circle |
side by side | facing left | facing right | facing the camera | from above | from below |
aerial view | bird's eye view | side view | front view | rear view | top view | overhead view |
wide angle | one object | two objects | three objects | four objects | five objects |
a single object | a pair | a few objects | many objects | a crowd | empty space | blank background""".replace("\n", " ").split("|")

# Describable Textures Dataset (DTD) category names, then surface qualities, then materials.
TEXTURES_MATERIALS = """banded | blotchy | braided | bubbly | bumpy | chequered | cobwebbed | cracked |
crosshatched | crystalline | dotted | fibrous | flecked | freckled | frilly | gauzy | grid | grooved |
honeycombed | interlaced | knitted | lacelike | lined | marbled | matted | meshed | paisley |
perforated | pitted | pleated | polka-dotted | porous | potholed | scaly | smeared | spiralled |
sprinkled | stained | stratified | striped | studded | swirly | veined | waffled | woven | wrinkled |
zigzagged | smooth | rough | glossy | matte | shiny | dull | polished | rusty | dusty | muddy | wet |
dry | furry | fuzzy | hairy | feathery | fluffy | soft | hard | grainy | sandy | rocky | gravelly |
spiky | prickly | slimy | sticky | greasy | oily | frosty | icy | snowy | leathery | silky | velvety |
woolly | glittery | sparkly | reflective | mirror-like | weathered | worn | peeling paint | corroded |
burnt | charred | moldy | mossy | patterned | plain | textured | embossed | engraved | carved |
quilted | ribbed | corrugated | tiled | mosaic | camouflage pattern | plaid | tartan | houndstooth |
herringbone | floral pattern | leopard print | zebra stripes | tie-dye | wood grain | wood | metal |
steel | stainless steel | iron | cast iron | aluminum | copper | brass | bronze | gold | silver |
chrome | tin | glass | frosted glass | stained glass | plastic | rubber | leather | suede | fabric |
cloth | cotton | wool | silk | satin | velvet | denim | linen | lace | canvas | felt | fleece | nylon |
polyester | burlap | paper | cardboard | tissue paper | stone | marble | granite | slate |
limestone | sandstone | concrete | cement | asphalt | brick | ceramic | porcelain | terracotta |
clay | plaster | stucco | tile | sand | soil | dirt | mud | gravel | pebbles | water | ice | snow |
frost | fur | feathers | scales | bone | ivory | shell | horn | wax | resin | foam | sponge |
rope | wicker | bamboo | straw | cork | rattan | plywood | hardwood | driftwood | bark | moss |
grass | leaves | coal | charcoal | crystal | diamond | gemstone | pearl | jade | amber | carbon fiber |
fiberglass | styrofoam | vinyl | mesh | wire | chain mail | gauze | yarn | thread | string | wooden |
leafy | stony | glassy | plastic wrap | metal sheet""".replace("\n", " ").split("|")

# Numbers, typography, picture types and styles, scenes and conditions that WordNet's noun
# hierarchy misses or ranks low.
EXTRA_GENERAL = (
    [str(i) for i in range(101)]
    + """one | two | three | four | five | six | seven | eight | nine | ten | eleven | twelve |
thirteen | fourteen | fifteen | sixteen | seventeen | eighteen | nineteen | twenty | thirty |
forty | fifty | hundred | thousand | million | first | second | third | last | number | digits |
roman numerals | text | word | words | letter | letters | alphabet | font | typeface | typography |
handwriting | calligraphy | cursive | serif font | sans-serif font | bold text | italic text |
capital letters | lowercase letters | headline | caption | title | logo | label | sign | street sign |
neon sign | graffiti | written text | printed text | text on a sign | barcode | QR code |
watermark | subtitles | poster | banner | billboard | sticker | stamp | signature | chart |
diagram | graph | table | map | screenshot | meme | comic strip | speech bubble | emoji | icon |
symbol | arrow sign | photograph | photo | snapshot | selfie | portrait | landscape | still life |
painting | oil painting | watercolor painting | acrylic painting | drawing | pencil drawing |
charcoal drawing | ink drawing | sketch | doodle | cartoon | anime | manga | illustration |
digital art | concept art | 3d render | computer graphics | pixel art | vector art | clip art |
line art | abstract art | pop art | street art | impressionism | cubism | surrealism |
expressionism | art deco | art nouveau | baroque | minimalism | renaissance painting | mural |
fresco | mosaic | collage | sculpture | statue | engraving | woodcut | etching | tattoo |
embroidery | origami | stained glass window | black and white photo | vintage photo |
old photograph | polaroid | film photography | macro photography | close-up photo |
long exposure | motion blur | blurry photo | out of focus | bokeh | high contrast | low contrast |
overexposed | underexposed | grainy photo | high resolution | low resolution | pixelated |
fisheye lens | panorama | infrared photo | x-ray image | thermal image | satellite image |
microscope image | night | daytime | sunrise | sunset | dusk | dawn | twilight | golden hour |
blue hour | sunlight | moonlight | shadow | shadows | silhouette | backlight | spotlight |
candlelight | neon lights | reflection | glare | lens flare | haze | fog | mist | smoke | rain |
snowfall | storm | lightning | rainbow | clouds | clear sky | overcast | indoors | outdoors |
underwater | in the air | in space | at night | in the snow | in the rain | in the desert |
in the forest | on the beach | in the city | in the countryside | in a room | in the kitchen |
on the street | in the sky | crowd of people | group of people | family | couple | child |
baby | toddler | teenager | adult | elderly person | man | woman | boy | girl | person | people |
face | smiling face | smile | laughing | crying | frowning | angry face | surprised face |
happy | sad | angry | scared | surprised | tired | bored | excited | calm | serious |
wearing glasses | wearing a hat | wearing a mask | long hair | short hair | curly hair |
bald | beard | mustache | tattooed | holding hands | hugging | kissing | waving | pointing |
sitting | standing | lying down | walking | running | jumping | dancing | swimming | flying |
climbing | riding a bike | driving | cooking | eating | drinking | sleeping | reading | writing |
playing | singing | fighting | working | shopping | waiting | talking | laughing together |
old | new | young | ancient | modern | futuristic | vintage | retro | antique | broken |
damaged | destroyed | abandoned | clean | dirty | messy | tidy | empty | full | crowded |
open | closed | wet | dry | hot | cold | frozen | melting | burning | glowing | bright | dark |
dim | colorful | pale | vivid | faded | beautiful | ugly | cute | scary | funny | elegant |
luxurious | cheap | simple | complex | detailed | blurry | sharp | natural | artificial | handmade |
homemade | cozy | peaceful | busy | quiet | loud | fast | slow | heavy | light | floating |
hanging | falling | spinning | exploding | splashing | dripping | reflecting | school | classroom |
newspaper | book page | ferry | construction crane | stadium | arena | restaurant menu""".replace("\n", " ").split("|")
)

# Gloss markers of offensive senses. A lemma is dropped from the general list when ANY of its
# WordNet senses carries one, or when it is in BLOCKLIST (terms WordNet does not mark).
OFFENSIVE_GLOSS = re.compile(
    r"\b(offensive|derogatory|disparaging|ethnic slur|vulgar|obscene|contemptuous term|"
    r"pejorative|slang for (the )?(penis|vagina|buttocks|sexual))", re.I)
BLOCKLIST = {
    # slurs
    "nigger", "nigga", "faggot", "fag", "dyke", "tranny", "retard", "spic", "chink", "gook",
    "kike", "wetback", "coon", "jap", "paki", "raghead", "towelhead", "redskin", "squaw",
    "spastic", "cretin",
    # profanity and sexual slang
    "cunt", "twat", "pussy", "cock", "dick", "prick", "ass", "arse", "asshole", "arsehole",
    "butthole", "tits", "titties", "boobs", "whore", "slut", "fuck", "fucker", "motherfucker",
    "shit", "bullshit", "piss", "bitch", "bastard", "wanker", "bollocks", "jerk off", "blowjob",
    "dildo", "porn", "porno", "pornography", "cum", "jizz", "hooker", "pimp", "turd",
}


# ---------------------------------------------------------------------------------------------
# Selection rules
# ---------------------------------------------------------------------------------------------

# Noun domains that name things one can see; people, animals, plants, artefacts, food, places ...
VISUAL_NOUN_LEXNAMES = {
    "noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.object", "noun.person",
    "noun.plant", "noun.substance", "noun.location", "noun.shape", "noun.phenomenon",
}
# Roots of the noun hierarchy whose hyponyms are candidates (any lexicographer file).
NOUN_ROOTS = ["physical_entity.n.01"]
EXTRA_NOUN_ROOTS = [
    "visual_property.n.01",    # colours, brightness, ...
    "shape.n.02",              # geometric forms
    "design.n.04",             # decorative patterns
    "sport.n.01",
    "social_event.n.01",       # weddings, parades, concerts
    "facial_expression.n.01",
    "posture.n.01",
    "character.n.08",          # letters and other written symbols
    "texture.n.01",
]
# A lemma found under physical_entity through a rare sense ("plan" the drawing, "issue" the
# offspring) is dropped when fewer than this share of its tagged uses are nouns in these domains.
DOMINANT_SENSE_LEXNAMES = VISUAL_NOUN_LEXNAMES | {"noun.Tops"}
MIN_VISUAL_SENSE_SHARE = 0.1
# Verb domains whose actions show in a picture; written as gerunds ("running").
ACTION_VERB_LEXNAMES = {
    "verb.motion", "verb.contact", "verb.body", "verb.weather", "verb.competition",
    "verb.consumption", "verb.creation", "verb.perception",
}
MIN_ACTION_SENSE_SHARE = 0.25
# Adjectives derived from nouns of these domains describe looks ("wooden", "leafy", "furry").
MATERIAL_LEXNAMES = {
    "noun.substance", "noun.plant", "noun.animal", "noun.food", "noun.body", "noun.object",
    "noun.artifact", "noun.phenomenon", "noun.shape",
}
# Attributes an adjective can describe that are visible.
VISUAL_ATTRIBUTES = {
    "color", "hue", "light", "luminosity", "brightness", "size", "shape", "form", "texture",
    "age", "temperature", "wetness", "cleanness", "complexion", "state of matter", "orientation",
    "straightness", "curvature", "thickness", "width", "height", "length", "weight", "smoothness",
    "roughness", "hardness", "transparency", "opacity", "fullness", "density", "beauty",
    "attractiveness", "solidity", "sharpness", "dryness", "hairiness", "cleanliness",
}

# Frequency thresholds (wordfreq Zipf scale, ~3 = once per million words). Phrases are scored
# below their rarest word: wordfreq's phrase estimate is close to the rarest word's frequency,
# which would rank long technical phrases as common.
PHRASE_PENALTY = 1.0
MIN_SCORE = {
    "noun": 2.4, "person": 3.0, "instance": 3.75, "adjective": 3.5, "adjective_noun": 4.0,
    "action": 3.0,
}
# Function words that WordNet also lists as nouns (chemical symbols, letters, "a have-not") and
# that would otherwise top the frequency ranking without naming anything visible.
STOPWORDS = set("""a an the and or but nor if then else so as at by for from in into of off on onto
out over to up upon with within without about above across after against along among around
before behind below beneath beside between beyond down during except inside near outside past
since through throughout till toward towards under underneath until via i me my mine we us our
ours you your yours he him his she her hers it its they them their theirs this that these those
who whom whose which what where when why how all any both each either every few many more most
much neither no none one other others several some such be am is are was were been being have
has had having do does did doing done can could may might must shall should will would not
there here very too also just only well even still yet again ever never now once soon same
own else less least than like unlike per plus minus
good bad better best worse worst great nice fine real true false right wrong possible special
main major general whole certain sure able likely important different used needed required
gone missing sorry current recent final original total serious simple super positive negative
regular annual early late local national private official natural
thing things stuff way ways case means course part parts lot bit kind sort type form end point
set state system level result source value range section effect addition conditions response
access individual nobody somebody anybody everybody self subject product""".split())
# Verbs too general to picture ("going", "getting", "making").
LIGHT_VERBS = set("""go get make use follow try take come give keep let put set see look seem become
bring start begin stop help want need find leave lead turn show work do have be say tell ask
call feel think know mean""".split())
MAX_WORDS = 4
MAX_CHARS = 40
ALLOWED = re.compile(r"[A-Za-z0-9][A-Za-z0-9 '&.\-]*")


def phrase_score(text: str) -> float:
    from wordfreq import zipf_frequency
    n_words = len(re.split(r"[\s\-]+", text.strip()))
    return zipf_frequency(text, "en") - PHRASE_PENALTY * (n_words - 1)


def clean_item(text: str) -> str:
    return " ".join(text.split())


def dedupe(items):
    """Keep the first occurrence of each item under the key weightscope.concepts.vocab uses (casefold,
    whitespace collapsed), so that the shipped files load without warnings."""
    seen, out = set(), []
    for it in items:
        it = clean_item(it)
        key = it.casefold()
        if it and key not in seen:
            seen.add(key)
            out.append(it)
    return out


def acceptable(text: str, wn: WordNet) -> bool:
    if not ALLOWED.fullmatch(text) or len(text) > MAX_CHARS or len(text.split()) > MAX_WORDS:
        return False
    if text.isupper() and len(text) > 1:        # abbreviations: "NYSE", "DPRK"
        return False
    low = text.casefold()
    if len(low) <= 2 or all(w in STOPWORDS for w in re.split(r"[\s\-]+", low)):
        return False                            # chemical symbols, letters, function words
    if low in BLOCKLIST or any(w in BLOCKLIST for w in low.split()):
        return False
    return not any(OFFENSIVE_GLOSS.search(s.gloss) for s in wn.senses(text))


def gerund(verb: str) -> str | None:
    """'run' -> 'running', 'dance' -> 'dancing', 'lie down' -> 'lying down'; the spelling is the
    candidate English actually uses most (by wordfreq), None if none of them is used."""
    from wordfreq import zipf_frequency
    head, _, rest = verb.partition(" ")
    cands = {head + "ing"}
    if head.endswith("ie"):
        cands.add(head[:-2] + "ying")
    if head.endswith("e") and not head.endswith(("ee", "ye", "oe")):
        cands.add(head[:-1] + "ing")
    if len(head) >= 3 and head[-1] not in "aeiouwxy" and head[-2] in "aeiou" and head[-3] not in "aeiou":
        cands.add(head + head[-1] + "ing")
    best = max(sorted(cands), key=lambda c: zipf_frequency(c, "en"))
    if zipf_frequency(best, "en") == 0:
        return None
    return f"{best} {rest}".strip()


def wordnet_nouns(wn: WordNet) -> dict:
    """lemma -> score for nouns under the visual roots that pass the thresholds."""
    n = wn.synsets["n"]
    phys = wn.hyponym_closure([wn.lookup(r) for r in NOUN_ROOTS])
    extra = wn.hyponym_closure([wn.lookup(r) for r in EXTRA_NOUN_ROOTS])
    out = {}
    for off in sorted(phys | extra):
        s = n[off]
        if off in phys and s.lexname not in VISUAL_NOUN_LEXNAMES:
            continue
        instance = any(sym == "@i" for sym, _, _ in s.pointers)
        if instance and s.lexname == "noun.person":      # named individuals
            continue
        kind = "instance" if instance else ("person" if s.lexname == "noun.person" else "noun")
        for lemma in s.lemmas:
            sc = phrase_score(lemma)
            if sc < MIN_SCORE[kind] or not acceptable(lemma, wn):
                continue
            if off in phys:
                share = wn.sense_share(lemma, 1, DOMINANT_SENSE_LEXNAMES | {s.lexname})
                if share is not None and share < MIN_VISUAL_SENSE_SHARE:
                    continue
            out[lemma] = max(sc, out.get(lemma, -1.0))
    return out


def wordnet_adjectives(wn: WordNet, nouns_under_physical: set) -> dict:
    """Adjectives describing a visual attribute (with their similar-to satellites), and adjectives
    derived from a physical noun ("wooden", "sandy")."""
    n, a = wn.synsets["n"], wn.synsets["a"]
    attr = {off for off, s in n.items() if VISUAL_ATTRIBUTES & set(s.lemmas)}
    heads = {off for off, s in a.items() if any(sym == "=" and t in attr for sym, t, _ in s.pointers)}
    sats = {off for off, s in a.items()
            if s.pos == "s" and any(sym == "&" and t in heads for sym, t, _ in s.pointers)}
    derived = {off for off, s in a.items()
               if any(sym in ("+", "\\") and p == "n" and t in nouns_under_physical
                      and n[t].lexname in MATERIAL_LEXNAMES for sym, t, p in s.pointers)}
    out = {}
    for offs, kind in ((heads | sats, "adjective"), (derived, "adjective_noun")):
        for off in sorted(offs):
            for lemma in a[off].lemmas:
                sc = phrase_score(lemma)
                if sc >= MIN_SCORE[kind] and acceptable(lemma, wn):
                    out[lemma] = max(sc, out.get(lemma, -1.0))
    return out


def wordnet_actions(wn: WordNet) -> dict:
    out = {}
    for off in sorted(wn.synsets["v"]):
        s = wn.synsets["v"][off]
        if s.lexname not in ACTION_VERB_LEXNAMES:
            continue
        for lemma in s.lemmas:
            if " " in lemma or "-" in lemma:      # particle verbs ("fight back") are rarely visual
                continue
            if lemma in LIGHT_VERBS:
                continue
            share = wn.sense_share(lemma, 2, ACTION_VERB_LEXNAMES)
            if share is not None and share < MIN_ACTION_SENSE_SHARE:
                continue
            g = gerund(lemma)
            if g is None:
                continue
            sc = phrase_score(g)
            if sc >= MIN_SCORE["action"] and acceptable(g, wn):
                out[g] = max(sc, out.get(g, -1.0))
    return out


def imagenet_classnames() -> list:
    """open_clip's ImageNet-1k names in class-index order. Two names occur twice there; they are
    replaced by the other WordNet lemma of their synset so that line i is class i and every line
    is distinct: 744 (n04008634 'projectile, missile') -> 'projectile', 836 (n04355933
    'sunglass', a burning lens) -> 'sunglass'."""
    import open_clip

    names = list(open_clip.IMAGENET_CLASSNAMES)
    assert len(names) == 1000 and names[744] == "missile" and names[836] == "sunglasses", \
        "open_clip's ImageNet class-name list changed; re-check the disambiguation"
    names[744] = "projectile"
    names[836] = "sunglass"
    assert len({x.casefold() for x in names}) == 1000
    return names


def build_all(wn_dir: Path) -> dict:
    """name -> list of concepts, in the order they are written."""
    wn = WordNet(wn_dir)
    phys = wn.hyponym_closure([wn.lookup(r) for r in NOUN_ROOTS])
    domain = {
        "imagenet": imagenet_classnames(),
        "cifar10": CIFAR10,
        "cifar100": CIFAR100,
        "colors": dedupe(COLORS),
        "shapes_positions": dedupe(SHAPES_POSITIONS),
        "textures_materials": dedupe(TEXTURES_MATERIALS),
    }
    scored = {}
    for part in (wordnet_nouns(wn), wordnet_adjectives(wn, phys), wordnet_actions(wn)):
        for k, v in part.items():
            scored[k] = max(v, scored.get(k, -1.0))
    # Curated and dataset names are always kept, whatever their frequency.
    for items in list(domain.values()) + [EXTRA_GENERAL]:
        for it in items:
            it = clean_item(it)
            if it:
                scored.setdefault(it, phrase_score(it))
    # Most frequent first (so the first N lines are the N most common concepts), ties alphabetical.
    # Among case variants the lower-case spelling wins ("man" over "Man", the Isle of Man).
    ordered = sorted(scored, key=lambda s: (-round(scored[s], 6), s.casefold(), s != s.casefold(), s))
    general = dedupe(ordered)
    return {"general": general, **domain}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wordnet-dir", type=Path, default=Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet")))
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: this folder)")
    ap.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    args = ap.parse_args(argv)
    lists = build_all(args.wordnet_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for name, items in lists.items():
        assert items and len({i.casefold() for i in items}) == len(items), name
        text = "".join(i + "\n" for i in items)
        path = args.out / f"{name}.txt"
        if args.check:
            same = path.is_file() and path.read_text(encoding="utf-8") == text
            print(f"{name:20s} {len(items):6d}  {'ok' if same else 'DIFFERS'}")
            status |= 0 if same else 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"{name:20s} {len(items):6d}  -> {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
