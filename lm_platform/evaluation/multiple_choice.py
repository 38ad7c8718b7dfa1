"""Multiple-choice exams scored by log-likelihood.

Items come from JSONL, one per line: `question` (string), `choices` (a list of strings, or a mapping
letter -> text as VMLU ships them), `answer` (an index, a letter or the text of the right choice),
optional `id`, `subject`, `lang` and `context` (a passage the question is about). A dev file in the same format
gives the k-shot examples (same subject first, in file order).

Two modes:
- `choices`: every choice's text is scored as the continuation of the prompt; the prediction is the
  choice with the highest log-likelihood (`acc`), per character (`acc_norm`) or per UTF-8 byte
  (`acc_bytes`).
- `letter`: the choices are listed in the prompt with letters, and only the answer letter after the
  prompt is scored (as VMLU's evaluation does); one forward pass per item.

Prompt formats: `plain` (English, ARC-shaped), `hellaswag` (a context continued by one of the endings),
`vmlu` (Vietnamese, A-E, subject in the header), `m3exam` (Vietnamese instructions, subject, passage),
`jcommonsenseqa` (Japanese, five choices, k-shot).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lm_platform.evaluation.loglik import LoglikScorer
from lm_platform.evaluation.stats import grouped, summary

LETTERS = "ABCDEFGHIJ"
FORMATS = ("plain", "hellaswag", "vmlu", "m3exam", "jcommonsenseqa")
MODES = ("choices", "letter")
METRICS = ("acc", "acc_norm", "acc_bytes")


@dataclass(frozen=True)
class MCItem:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str = ""
    context: str = ""
    lang: str = ""
    # True when the file gave no `id` and `id` is the item's position in its file: positions of a test
    # file and of its dev file coincide, so they say nothing about two items being the same one.
    positional_id: bool = field(default=False, compare=False)

    def same_item(self, other: MCItem) -> bool:
        """The same exam item: equal ids where both files name them, else equal question, choices and
        context."""
        if not self.positional_id and not other.positional_id:
            return self.id == other.id
        return (self.question, self.choices, self.context) == (other.question, other.choices, other.context)

    def text_with_answer(self) -> str:
        """The question joined with its right answer: what decontamination looks for in training text."""
        parts = [self.context, self.question, self.choices[self.answer]]
        return " ".join(p for p in parts if p)


def read_items(path: str | Path, max_items: int | None = None) -> list[MCItem]:
    """Items of a JSONL exam file; a bad record raises an error naming the file, line and field."""
    items: list[MCItem] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON: {exc}") from None
            items.append(_item(rec, where, len(items)))
            if max_items is not None and len(items) >= max_items:
                break
    if not items:
        raise ValueError(f"{path}: no multiple-choice items")
    return items


def _item(rec: dict, where: str, index: int) -> MCItem:
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: a record is a JSON object")
    question = rec.get("question")
    if not isinstance(question, str):
        raise ValueError(f"{where}: field 'question' must be a string")
    raw = rec.get("choices")
    if isinstance(raw, dict):
        keys = sorted(raw)
        choices = tuple(raw[k] for k in keys)
        labels = [str(k).strip().upper() for k in keys]
    elif isinstance(raw, list):
        choices = tuple(raw)
        labels = list(LETTERS[: len(raw)])
    else:
        raise ValueError(f"{where}: field 'choices' must be a list or a mapping letter -> text")
    if len(choices) < 2 or len(choices) > len(LETTERS) or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"{where}: field 'choices' needs 2 to {len(LETTERS)} non-empty strings")
    ans = rec.get("answer")
    if isinstance(ans, bool) or ans is None:
        raise ValueError(f"{where}: field 'answer' must be an index, a letter or the text of a choice")
    if isinstance(ans, int):
        answer = ans
    elif isinstance(ans, str) and ans.strip().upper() in labels:
        answer = labels.index(ans.strip().upper())
    elif isinstance(ans, str) and ans in choices:
        answer = choices.index(ans)
    elif isinstance(ans, str) and ans.strip().isdigit():
        answer = int(ans.strip())
    else:
        raise ValueError(f"{where}: field 'answer' {ans!r} is not an index, a letter or a choice's text")
    if not 0 <= answer < len(choices):
        raise ValueError(f"{where}: field 'answer' {ans!r} is out of range for {len(choices)} choices")
    for key in ("subject", "context", "id", "lang"):
        if key in rec and rec[key] is not None and not isinstance(rec[key], str | int):
            raise ValueError(f"{where}: field '{key}' must be a string")
    return MCItem(
        id=str(rec.get("id", index)),
        question=question,
        choices=choices,
        answer=answer,
        subject=str(rec.get("subject") or ""),
        context=str(rec.get("context") or ""),
        lang=str(rec.get("lang") or ""),
        positional_id=rec.get("id") is None,
    )


# --- prompt formats -------------------------------------------------------------------------------------
# Each format gives the prompt's header (once, before the shots), one question's text, the text of its
# answer as a continuation (a choice in `choices` mode, a letter in `letter` mode) and the shot separator.


@dataclass(frozen=True)
class Format:
    header: Callable[[MCItem], str]
    body: Callable[[MCItem, bool], str]
    lead: str  # what joins the prompt to the continuation (a space for spaced languages)
    sep: str = "\n\n"


def _listed(item: MCItem, style: str = "{l}. {c}") -> str:
    return "\n".join(style.format(l=LETTERS[i], c=c) for i, c in enumerate(item.choices))


def _plain_body(item: MCItem, letters: bool) -> str:
    text = f"{item.context}\n" if item.context else ""
    text += f"Question: {item.question}\n"
    if letters:
        text += _listed(item) + "\n"
    return text + "Answer:"


def _hellaswag_body(item: MCItem, letters: bool) -> str:
    text = " ".join(p for p in (item.context, item.question) if p)
    return text + ("\n" + _listed(item) + "\nAnswer:" if letters else "")


def _vmlu_header(item: MCItem) -> str:
    subject = f" môn {item.subject}" if item.subject else ""
    return f"Sau đây là các câu hỏi trắc nghiệm{subject}. Chọn chữ cái đứng trước đáp án đúng.\n\n"


def _vmlu_body(item: MCItem, letters: bool) -> str:
    text = f"{item.context}\n" if item.context else ""
    return text + f"Câu hỏi: {item.question}\n{_listed(item)}\nĐáp án:"


def _m3exam_header(item: MCItem) -> str:
    subject = f" môn {item.subject}" if item.subject else ""
    return (
        f"Sau đây là câu hỏi trắc nghiệm trong một đề thi{subject} ở Việt Nam. Hãy đọc kỹ đề bài rồi "
        "chọn một đáp án đúng.\n\n"
    )


def _m3exam_body(item: MCItem, letters: bool) -> str:
    text = f"{item.context}\n" if item.context else ""
    return text + f"{item.question}\n{_listed(item, '({l}) {c}')}\nĐáp án:"


def _jcqa_body(item: MCItem, letters: bool) -> str:
    options = ",".join(f"{i}.{c}" for i, c in enumerate(item.choices))
    return f"質問：{item.question}\n選択肢：{options}\n回答："


FORMAT_DEFS: dict[str, Format] = {
    "plain": Format(lambda _: "", _plain_body, " "),
    "hellaswag": Format(lambda _: "", _hellaswag_body, " "),
    "vmlu": Format(_vmlu_header, _vmlu_body, " "),
    "m3exam": Format(_m3exam_header, _m3exam_body, " "),
    "jcommonsenseqa": Format(
        lambda _: "以下は常識に関する質問です。選択肢から正しい答えを選んでください。\n\n", _jcqa_body, ""
    ),
}


def continuation(item: MCItem, choice: int, fmt: str, mode: str) -> str:
    """The text scored for `choice`: its letter in letter mode, else the choice itself."""
    f = FORMAT_DEFS[fmt]
    if mode == "letter":
        return f.lead + (LETTERS[choice] if fmt != "jcommonsenseqa" else str(choice))
    return f.lead + item.choices[choice]


def build_prompt(item: MCItem, fmt: str, mode: str, shots: list[MCItem] = ()) -> str:  # type: ignore[assignment]
    """The prompt for `item`, with `shots` answered before it."""
    if fmt not in FORMAT_DEFS:
        raise ValueError(f"unknown prompt format '{fmt}' (known: {list(FORMAT_DEFS)})")
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}' (known: {list(MODES)})")
    f = FORMAT_DEFS[fmt]
    letters = mode == "letter"
    parts = [f.body(s, letters) + continuation(s, s.answer, fmt, mode) for s in shots]
    return f.header(item) + "".join(p + f.sep for p in parts) + f.body(item, letters)


def pick_shots(item: MCItem, dev: list[MCItem], k: int) -> list[MCItem]:
    """The first k dev items of the item's subject, then of other subjects, never the item itself."""
    if k <= 0 or not dev:
        return []
    others = [d for d in dev if not d.same_item(item)]
    same = [d for d in others if d.subject == item.subject]
    other = [d for d in others if d.subject != item.subject]
    return (same + other)[:k]


def score_items(
    scorer: LoglikScorer,
    items: list[MCItem],
    fmt: str = "plain",
    mode: str = "choices",
    dev: list[MCItem] | None = None,
    num_fewshot: int = 0,
    metric: str | None = None,
) -> dict:
    """Accuracy of the model on the items, overall and per subject, with per-item predictions.

    Returns score (the chosen `metric`, default `acc`), n, stderr, `metrics` (each metric's score and
    stderr), `per_subject` ({subject: score, n, stderr}) and `items` (id, answer, prediction per metric,
    log-likelihoods).
    """
    metric = metric or "acc"
    allowed = ("acc",) if mode == "letter" else METRICS
    if metric not in allowed:
        raise ValueError(f"metric '{metric}' is not available in {mode} mode (available: {list(allowed)})")
    requests: list[tuple[str, str]] = []
    spans: list[tuple[int, int]] = []
    for item in items:
        prompt = build_prompt(item, fmt, mode, pick_shots(item, dev or [], num_fewshot))
        start = len(requests)
        requests += [(prompt, continuation(item, c, fmt, mode)) for c in range(len(item.choices))]
        spans.append((start, len(requests)))
    results = scorer.score(requests)
    rows = []
    for item, (a, b) in zip(items, spans, strict=True):
        lls = [r.loglik for r in results[a:b]]
        conts = item.choices  # normalised by the choice's own length, without the joining space
        preds = {"acc": _argmax(lls)}
        if mode == "choices":
            preds["acc_norm"] = _argmax([ll / max(1, len(c)) for ll, c in zip(lls, conts, strict=True)])
            preds["acc_bytes"] = _argmax(
                [ll / max(1, len(c.encode())) for ll, c in zip(lls, conts, strict=True)]
            )
        rows.append(
            {"id": item.id, "subject": item.subject, "answer": item.answer, "pred": preds, "loglik": lls}
        )
    metrics = {m: summary([float(r["pred"][m] == r["answer"]) for r in rows]) for m in allowed}
    per_subject = grouped((r["subject"] or "-", float(r["pred"][metric] == r["answer"])) for r in rows)
    head = metrics[metric]
    return {
        "kind": "multiple_choice",
        "metric": metric,
        "higher_is_better": True,
        "score": head["score"],
        "n": head["n"],
        "stderr": head["stderr"],
        "chance": sum(1 / len(i.choices) for i in items) / len(items),
        "metrics": metrics,
        "per_subject": per_subject,
        "items": rows,
    }


def _argmax(values: list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best
