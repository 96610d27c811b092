"""UniPercept's prompt strings, byte for byte: the one copy the runtime and the factory (export/) both import."""

import re

AXIS_DESCRIPTIONS = {"iaa": "aesthetics", "iqa": "quality", "ista": "structure and texture richness"}

# UniPercept's rating instruction, byte for byte (including its "73-ec, 74-ed" slip).
RATING_TEMPLATE = (
    "Rate the {desc} score of the image in 0-100. In the output format, numbers are replaced by 2 corresponding "
    "letters, and the mapping relationship is: score 0 to 25: 0-aa, 1-ab, 2-ac, 3-ad, ... , 25-az, \nscore 26 to "
    "50: 26-ca, 27-cb, 28-cc, 29-cd, ..., 50-cy, \nscore 51 to 75: 51-da, 52-db, 53-dc, 54-dd, ..., 75-dy, \nscore "
    "76 to 100: 76-ea, 77-eb, 73-ec, 74-ed, ..., 100-ey. \nThe answer only outputs 2 corresponding letters."
)

# UniPercept's multiple-choice (VQA) instruction, byte for byte.
VQA_TEMPLATE = (
    "Given the image and the following multiple-choice question, choose the best answer. Only reply with the "
    "letter (A, B, C, or D).\n\nQuestion:\n\n{question}"
)

# An option line of a multiple-choice question: "A. ...", "B) ...", "C: ..." at the start of a line.
_OPTION_LINE = re.compile(r"^\s*([A-Z])\s*[.):]", re.MULTILINE)


def option_letters(question: str) -> str:
    """The option letters a multiple-choice question lists, in order ('' when it lists none)."""
    return "".join(dict.fromkeys(_OPTION_LINE.findall(question)))


def vqa_answer(reply: str) -> str:
    """UniPercept's VQA read-out (eval_vqa.py): the first character of the stripped reply, upper-cased."""
    return reply.strip().upper()[:1]
