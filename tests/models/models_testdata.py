"""Hand-written sentences and small helpers for the model backend tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

POSITIVE = [
    "I loved this movie from start to finish.",
    "A warm, funny and beautifully acted film.",
    "The best thing I have seen in years.",
    "An absolute delight, I would watch it again tomorrow.",
    "Brilliant performances and a moving story.",
    "The food was delicious and the staff were lovely.",
    "What a fantastic concert, the band was on fire.",
    "This book kept me smiling the whole weekend.",
    "Great value, works perfectly, highly recommended.",
    "The hotel room was spotless and the view was stunning.",
    "A charming little gem with a big heart.",
    "I am so happy with this purchase.",
    "Gorgeous photography and a clever script.",
    "Our guide was friendly, patient and wonderful.",
    "The new update made the app fast and pleasant to use.",
    "A joyful, uplifting experience for the whole family.",
    "Excellent service, we will definitely come back.",
    "The ending was perfect and left me grinning.",
    "Superb craftsmanship, it feels solid and well made.",
    "Simply wonderful, I enjoyed every minute.",
]
NEGATIVE = [
    "I hated this movie from start to finish.",
    "A dull, clumsy and badly acted film.",
    "The worst thing I have seen in years.",
    "An absolute bore, I walked out halfway through.",
    "Wooden performances and a pointless story.",
    "The food was cold and the staff were rude.",
    "What a disappointing concert, the sound was awful.",
    "This book was a slog and I gave up on it.",
    "Poor value, it broke after two days, avoid it.",
    "The hotel room was dirty and smelled terrible.",
    "A cynical mess with no heart at all.",
    "I regret buying this, total waste of money.",
    "Ugly visuals and a lazy script.",
    "Our guide was late, rude and unhelpful.",
    "The new update made the app slow and frustrating.",
    "A miserable, depressing experience for everyone.",
    "Terrible service, we will never come back.",
    "The ending was stupid and ruined everything.",
    "Cheap plastic, it feels flimsy and badly made.",
    "Simply awful, I hated every minute.",
]
HELDOUT_POSITIVE = [
    "A lovely film that made me laugh and cry.",
    "The staff were kind and the meal was excellent.",
    "Fantastic quality, I am delighted with it.",
    "An inspiring and beautiful documentary.",
    "We had a great time, everything was perfect.",
    "The music was gorgeous and the singer was amazing.",
    "Really enjoyable, smart and full of charm.",
    "Comfortable, quiet and very well designed.",
    "I would happily recommend it to all my friends.",
    "A triumph, easily the highlight of my year.",
]
HELDOUT_NEGATIVE = [
    "A dreadful film that bored me to tears.",
    "The staff ignored us and the meal was inedible.",
    "Shoddy quality, I am furious about it.",
    "A tedious and ugly documentary.",
    "We had an awful time, everything went wrong.",
    "The music was grating and the singer was off key.",
    "Really annoying, dumb and completely charmless.",
    "Uncomfortable, noisy and very poorly designed.",
    "I would warn all my friends to stay away.",
    "A disaster, easily the low point of my year.",
]
# three topics for the multinomial head
TOPICS = {
    "sports": [
        "The striker scored twice in the second half.",
        "She won the marathon in record time.",
        "The team lost the final on penalties.",
        "He hit a home run in the ninth inning.",
        "The coach praised the defence after the match.",
        "The tennis star reached the semi-final.",
        "Fans cheered as the cyclists crossed the line.",
        "The goalkeeper saved three shots in a row.",
    ],
    "food": [
        "Add the garlic and fry until golden.",
        "This soup needs more salt and pepper.",
        "Bake the bread for forty minutes.",
        "The pasta sauce simmered for hours.",
        "She ordered sushi and green tea.",
        "Whisk the eggs with sugar and butter.",
        "The curry was rich and spicy.",
        "Serve the salad with lemon dressing.",
    ],
    "weather": [
        "Heavy rain is expected tomorrow morning.",
        "The forecast says sunny skies all week.",
        "Strong winds knocked down several trees.",
        "Snow will fall on the mountains tonight.",
        "Temperatures will drop below freezing.",
        "A thunderstorm is moving in from the west.",
        "Fog made the morning commute slow.",
        "The heatwave will last until Friday.",
    ],
}


def sentiment_set(n_per_class: int = 20) -> tuple[list[str], list[str]]:
    """``n_per_class`` positive then negative training sentences, interleaved."""
    texts: list[str] = []
    labels: list[str] = []
    for p, n in zip(POSITIVE[:n_per_class], NEGATIVE[:n_per_class], strict=True):
        texts += [p, n]
        labels += ["pos", "neg"]
    return texts, labels


def heldout_set() -> tuple[list[str], list[str]]:
    texts = HELDOUT_POSITIVE + HELDOUT_NEGATIVE
    return texts, ["pos"] * len(HELDOUT_POSITIVE) + ["neg"] * len(HELDOUT_NEGATIVE)


class RecordingProgress:
    """A Progress that records each task's description, total and advances."""

    def __init__(self) -> None:
        self.tasks: list[dict] = []

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        record = {"description": description, "total": total, "done": 0}
        self.tasks.append(record)

        def advance(n: int = 1) -> None:
            record["done"] += n

        yield advance
