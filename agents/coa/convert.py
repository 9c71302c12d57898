"""GSM8K-style solutions -> verified Chain-of-Abstraction chains (spec/loops.md §1.4, Appendix A.1).

Two routes, both verified by reification (a chain is kept only if it reproduces the gold answer within 1e-6):

- **Deterministic** (the §1.4 shortcut): every ``<<e=r>>r`` annotation becomes ``[e' = yK]``, where ``e'`` is
  ``e`` with each number equal *by value* to an earlier result replaced by that result's placeholder (numbers are
  read as whole tokens, so ``12`` never matches inside ``120``); a restated ``e =`` just before the annotation is
  dropped. Plain-text arithmetic without an annotation (``90-24 = 66``, ``20% of 50 = 10``) is converted the same
  way when its stated result checks out. The chain ends with ``#### yK`` naming the placeholder that holds the
  gold answer (the last result equal to it).
- **LLM rewrite** (the paper's route): :func:`rewrite_prompt` builds a few-shot chat prompt (paraphrased structure
  of the paper's prompt: task description, question -> gold answer -> abstract chain demonstrations, then the
  target) and :func:`rewrite_with_generator` verifies each rewrite the same way.

Measured on ``../shared/data/gsm8k/train.jsonl`` (7473 rows): 97.36 % verified (annotations alone: 93.86 %); the
rest by :func:`failure_category`: 104 answer_in_unconverted_text (rounding up, verbal arithmetic such as "7 minus 6
equals 1", slips in the gold text), 68 no_arithmetic, 25 equation_with_unknowns.

Records follow Appendix A.1 (``question``, ``gold_answer``, ``gold_cot``, ``chain`` (= ``coa_chain``),
``verified``, ``answer``, ``reason`` when not verified); :func:`to_sft_row` gives TRL's conversational SFT row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from loopwright.sdk.tasks.gsm8k import extract_gold_answer, is_correct

from .chain import ChainConfig, InvalidChain, format_value
from .reify import reify

__all__ = [
    "REWRITE_EXEMPLARS",
    "REWRITE_SYSTEM",
    "SFT_SYSTEM",
    "chain_from_solution",
    "convert_record",
    "convert_rows",
    "failure_category",
    "rewrite_prompt",
    "rewrite_with_generator",
    "to_sft_row",
    "verify_chain",
]

_ANNOT = re.compile(r"<<([^<>]*?)=([^<>=]*?)>>")
_NUM_TOKEN = re.compile(r"(?<![\w.])(?:\d+(?:\.\d+)?|\.\d+)(?![\w])")
# plain-text arithmetic: "90-24 = 66", "3 x $5 = $15", "20% * 50 = 10" (at least one operator, then "= number")
_OP_CHARS = r"[+\-*/x×÷−–]"
_TERM = r"\(?\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)%?\)?"
_UNITS = r"(?:\s+(?![xX]\s)[A-Za-z][A-Za-z'’]*(?:/[A-Za-z]+)?){0,3}"  # "10 minutes / 5 miles = 2"
_PLAIN_EQ = re.compile(
    rf"(?<![\w.$])(?P<lhs>{_TERM}{_UNITS}(?:\s*{_OP_CHARS}\s*{_TERM}{_UNITS})+)\s*=\s*(?P<dollar>\$?)(?P<rhs>\d[\d,]*(?:\.\d+)?|\.\d+)"
    r"(?P<pct>%?)(?![\d.]\d)"
)
# a restated expression just before an annotation: "48/2 = <<48/2=24>>" -> drop "48/2 = "
_RESTATED = re.compile(rf"(?:(?<=\s)|^)(?:{_TERM}|\s|{_OP_CHARS})*\d(?:{_TERM}|\s|{_OP_CHARS})*=\s*\$?\s*$")
# a number in free text (thousands commas allowed): "200,000", "18.50", ".5"
_TEXT_NUM = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?<=\d)(?![\w]|[.,]\d)")

SFT_SYSTEM = ("Solve the problem by writing a reasoning chain in which every computed value is a bracketed "
              "calculation with an output variable, e.g. [20 + 35 = y1]; reuse the variables later and end with "
              "'#### yK' naming the answer variable.")


def _normalize_expr(expr: str) -> str | None:
    """An annotation or plain-text expression in the chain's math grammar, or ``None`` if it cannot be."""
    e = expr.strip().replace("$", "").replace("×", "*").replace("÷", "/").replace("^", "**")
    e = e.replace("−", "-").replace("–", "-")
    e = re.sub(r"(?<=\d),(?=\d{3}\b)", "", e)
    e = re.sub(r"(?<=[\d)\s])[xX](?=[\s\d(])", "*", e)
    e = re.sub(r"(\d+(?:\.\d+)?|\.\d+)%", r"(\1/100)", e)
    e = re.sub(r"\s+", " ", e).strip()
    if not e or not re.fullmatch(r"[\d\s.+\-*/()]+", e) or not re.search(r"\d", e):
        return None
    return e


def _strip_units(text: str) -> str:
    """Drop unit words from plain-text arithmetic: ``"10 minutes / 5 miles"`` -> ``"10 / 5"`` (``x`` stays)."""
    return re.sub(r"(?<![\w])(?![xX](?:\s|\d|$))[A-Za-z][A-Za-z'’]*(?:/[A-Za-z]+)?", " ", text)


def _num(s: str) -> Fraction | None:
    s = s.replace(",", "").replace("$", "").strip()
    if s.startswith("."):
        s = "0" + s
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _abstract(expr: str, results: Mapping[Fraction, str]) -> str:
    """``expr`` with every number equal to an earlier result replaced by that result's placeholder."""
    def repl(m: re.Match[str]) -> str:
        v = _num(m.group(0))
        return results.get(v, m.group(0)) if v is not None else m.group(0)

    return _NUM_TOKEN.sub(repl, expr)


def _exact(expr: str) -> Fraction | None:
    from loopwright.tools.calculator import CalculatorError, calculate

    try:
        return calculate(expr)
    except (CalculatorError, ZeroDivisionError, ValueError, ArithmeticError):
        return None


def _abstract_text(text: str, results: Mapping[Fraction, str], keep: set[Fraction]) -> str:
    """Later mentions of computed values in free text become their placeholders (numbers in ``keep`` stay)."""
    if not results:
        return text

    def repl(m: re.Match[str]) -> str:
        v = _num(m.group(0))
        return results[v] if v is not None and v in results and v not in keep else m.group(0)

    return _TEXT_NUM.sub(repl, text)


def chain_from_solution(solution: str, gold: str | None = None, *, plain_text: bool = True,
                        question: str | None = None) -> tuple[str, str | None]:
    """Deterministically rewrite a GSM8K solution (``<<e=r>>`` annotations) into an abstract chain.

    Returns ``(chain, reason)``: ``reason`` is ``None`` on success, else why no chain could be built (the chain
    text is then the partial rewrite). ``gold`` (the ``####`` number) picks the answer placeholder; without it
    the last result is the answer. ``plain_text`` also converts unannotated ``a op b = c`` arithmetic. With
    ``question``, later mentions of a computed value in the text become its placeholder too (as in the paper's
    rewrites), except numbers that also occur in the question.
    """
    keep = {v for v in (_num(t) for t in _TEXT_NUM.findall(question or "")) if v is not None}
    body = solution.rsplit("####", 1)[0].rstrip()
    results: dict[Fraction, str] = {}
    stated: list[tuple[str, Fraction | None, bool]] = []
    out: list[str] = []
    pos = 0
    k = 0
    events: list[tuple[int, int, str, str, str]] = []  # (start, end, expr, result, prefix-kind)
    for m in _ANNOT.finditer(body):
        end = m.end()
        r = m.group(2).strip()
        rest = body[end:]
        rep = re.match(r"\s*\$?\s*((?:\d[\d,]*)?(?:\.\d+)?)(?![\d])", rest)
        if rep is not None and rep.group(1) and _num(rep.group(1)) == _num(r):
            end += rep.end()
        events.append((m.start(), end, m.group(1), r, "annot"))
    if plain_text:
        taken = [(s, e) for s, e, *_ in events]
        for m in _PLAIN_EQ.finditer(body):
            s, e = m.start(), m.end()
            if any(s < te and ts < e for ts, te in taken) or body[e:e + 2] == "<<":
                continue
            lhs = m.group("lhs")
            expr = _normalize_expr(_strip_units(lhs))
            rhs = _num(m.group("rhs"))
            if expr is None or rhs is None:
                continue
            if m.group("pct"):
                rhs = rhs / 100
            val = _exact(expr)
            if val is None or val != rhs:
                continue
            events.append((s, e, _strip_units(lhs), m.group("rhs") + ("%" if m.group("pct") else ""),
                           "plain$" if m.group("dollar") else "plain"))
    events.sort()
    if not events:
        return body, "no <<expr=result>> annotations and no plain-text arithmetic"
    for s, e, expr, r, kind in events:
        pre = body[pos:s]
        dollar = ""
        if kind == "annot":
            rm = _RESTATED.search(pre)
            if rm is not None:
                dollar = "$" if pre.rstrip().endswith("$") or pre[: rm.start()].endswith("$") else ""
                pre = pre[: rm.start()]
            elif pre.endswith("$"):
                pre, dollar = pre[:-1], "$"
        elif kind == "plain$":
            dollar = "$"
        norm = _normalize_expr(expr)
        if norm is None:
            return "".join(out) + body[pos:], f"unparseable expression {expr!r}"
        k += 1
        ph = f"y{k}"
        if question is not None:
            pre = _abstract_text(pre, results, keep)
        out.append(f"{pre}{dollar}[{_abstract(norm, results)} = {ph}]")
        rv = _num(r.rstrip("%"))
        if rv is not None and r.endswith("%"):
            rv = rv / 100
        if rv is not None:
            results[rv] = ph
        stated.append((ph, rv, r.endswith("%")))
        pos = e
    out.append(_abstract_text(body[pos:], results, keep) if question is not None else body[pos:])
    chain = "".join(out).rstrip()
    answer_ph = stated[-1][0]
    if gold is not None:
        g = _num(gold)
        matches = [ph for ph, v, _ in stated if v is not None and g is not None and v == g]
        if matches:
            answer_ph = matches[-1]
        elif g is not None:
            pct = [ph for ph, v, is_pct in stated if is_pct and v is not None and v * 100 == g]
            if pct:  # "80% * 20% = 16%" with gold 16: the answer is the percentage number
                k += 1
                chain += f"\nAs a percentage: [{pct[-1]} * 100 = y{k}]."
                answer_ph = f"y{k}"
    return f"{chain}\n#### {answer_ph}", None


def verify_chain(chain: str, gold: str | float, tools: Mapping[str, Any] | None = None,
                 config: ChainConfig | None = None, **reify_kwargs: Any) -> dict[str, Any]:
    """Reify ``chain`` and compare its answer to ``gold`` (tolerance 1e-6, Appendix A.1 ``numeric_tolerance``).

    Returns ``{"verified", "answer", "reason", "filled", "n_calls", "errors"}``; ``reason`` is ``None`` when
    verified, else one of ``invalid chain: ...``, ``reification failed: ...``, ``no answer``,
    ``wrong answer ...``.
    """
    rei = reify(chain, tools, config=config, **reify_kwargs)
    ans = rei.answer
    answer = format_value(ans) if ans is not None else None
    reason: str | None = None
    if isinstance(rei.chain, InvalidChain):
        reason = f"invalid chain: {rei.chain.reason}"
    elif ans is None:
        reason = "reification failed: " + "; ".join(rei.errors) if rei.errors else "no answer"
    elif not is_correct(float(ans) if isinstance(ans, Fraction) else ans, gold):
        reason = f"wrong answer: reified {answer}, gold {gold}"
    return {"verified": reason is None, "answer": answer, "reason": reason, "filled": rei.filled_text,
            "n_calls": rei.n_calls, "errors": list(rei.errors)}


def _designate_by_value(chain: str, gold: str, tools: Mapping[str, Any] | None) -> tuple[str, dict] | None:
    """Re-point the chain's ``#### yK`` line at the last placeholder whose reified value equals ``gold``."""
    rei = reify(chain, tools)
    hits = [ph for ph, v in rei.values.items() if v is not None and is_correct(float(v), gold)]
    if not hits or "\n#### " not in chain:
        return None
    hits.sort(key=lambda ph: int(ph[1:]))
    alt = chain.rsplit("\n#### ", 1)[0] + f"\n#### {hits[-1]}"
    ver = verify_chain(alt, gold, tools)
    return (alt, ver) if ver["verified"] else None


def convert_record(row: Mapping[str, Any], tools: Mapping[str, Any] | None = None, *, plain_text: bool = True,
                   source: str = "gsm8k", id: str | None = None) -> dict[str, Any]:
    """One GSM8K row (``question``, ``answer``) -> an Appendix A.1 SFT record, verified by reification.

    Never raises on bad rows: a row without a ``####`` gold answer or without a convertible solution comes back
    with ``verified=False`` and a ``reason``.
    """
    question = str(row.get("question", ""))
    cot = str(row.get("answer", ""))
    rec: dict[str, Any] = {"id": id if id is not None else row.get("id"), "question": question, "gold_cot": cot,
                           "source": source}
    missing = [k for k in ("question", "answer") if not isinstance(row.get(k), str) or not row[k].strip()]
    if missing:
        return rec | {"gold_answer": None, "chain": None, "coa_chain": None, "verified": False, "answer": None,
                      "reason": f"missing field(s) {', '.join(map(repr, missing))}: a GSM8K row has 'question' and "
                                f"'answer' strings (got keys {sorted(map(str, row))[:10]})"}
    try:
        gold = extract_gold_answer(cot)
    except ValueError as e:
        return rec | {"gold_answer": None, "chain": None, "coa_chain": None, "verified": False, "answer": None,
                      "reason": f"no gold answer: {e}"}
    rec["gold_answer"] = gold
    chain, why = chain_from_solution(cot, gold, plain_text=plain_text, question=question)
    if why is not None:
        return rec | {"chain": chain, "coa_chain": chain, "verified": False, "answer": None,
                      "reason": f"not convertible: {why}"}
    ver = verify_chain(chain, gold, tools)
    if not ver["verified"] and ver["reason"].startswith("wrong answer"):
        # the answer may be an earlier result than the one the solution stated last: designate it by value
        alt = _designate_by_value(chain, gold, tools)
        if alt is not None:
            chain, ver = alt
    rec |= {"chain": chain, "coa_chain": chain, "verified": ver["verified"], "answer": ver["answer"],
            "n_calls": ver["n_calls"]}
    if not ver["verified"]:
        rec["reason"] = ver["reason"]
    return rec


_UNKNOWN_EQ = re.compile(r"\b(?:[Ll]et [a-zA-Z]\b|[a-zA-Z] = \$?\d|\d[a-zA-Z] [+\-=])")


def failure_category(record: Mapping[str, Any]) -> str | None:
    """A coarse category for an unverified record (``None`` when verified), for the conversion report.

    ``missing_fields`` (no ``question`` / ``answer`` string), ``no_gold``, ``no_arithmetic`` (no annotation and no checkable plain-text arithmetic), ``unparseable``,
    ``invalid_chain``, ``reification_failed``, ``other``, then for wrong answers: ``equation_with_unknowns`` (the solution
    solves for a letter), ``rounding`` (the answer is within 1 % of the gold), ``answer_in_unconverted_text``.
    """
    if record.get("verified"):
        return None
    reason = str(record.get("reason", ""))
    if reason.startswith("missing field"):
        return "missing_fields"
    if reason.startswith("no gold"):
        return "no_gold"
    if "no <<expr=result>>" in reason:
        return "no_arithmetic"
    if "unparseable" in reason:
        return "unparseable"
    if reason.startswith("invalid chain"):
        return "invalid_chain"
    if reason.startswith(("reification failed", "no answer")):
        return "reification_failed"
    if not reason.startswith("wrong answer"):
        return "other"
    if _UNKNOWN_EQ.search(str(record.get("gold_cot", ""))):
        return "equation_with_unknowns"
    ans, gold = _num(str(record.get("answer") or "")), _num(str(record.get("gold_answer") or ""))
    if ans is not None and gold and abs(ans - gold) <= abs(gold) / 100:
        return "rounding"
    return "answer_in_unconverted_text"


def convert_rows(rows: Iterable[Mapping[str, Any]], tools: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`convert_record` over ``rows`` with one shared set of tools (default: the package's math tools)."""
    from .reify import default_math_tools

    tools = default_math_tools() if tools is None else tools
    return [convert_record(r, tools, id=r.get("id", str(i)) if isinstance(r, Mapping) else str(i), **kwargs)
            for i, r in enumerate(rows)]


def to_sft_row(record: Mapping[str, Any], system: str | None = SFT_SYSTEM) -> dict[str, Any]:
    """TRL conversational SFT row ``{"messages": [system?, user question, assistant chain]}`` of a record."""
    if not record.get("chain"):
        raise ValueError(f"record {record.get('id')!r} has no chain; keep only verified records for SFT")
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user", "content": record["question"]}, {"role": "assistant", "content": record["chain"]}]
    return {"messages": msgs}


# ----------------------------------------------------------------------------------------------------------------
# LLM-rewrite route (§1.4 steps 2-3). Structure paraphrased from the paper; exemplars written for this project.

REWRITE_SYSTEM = (
    "Rewrite a worked solution as an abstract reasoning chain. Keep the wording of the solution, but replace every "
    "computed number by a bracketed calculation that names its result with a fresh variable, like [20 + 35 = y1]. "
    "When a later step uses a computed value, write its variable instead of the number (e.g. [90 - y1 = y2]). "
    "Numbers given in the question stay as numbers. Finish with a line '#### yK' naming the variable that holds "
    "the final answer. Output only the rewritten chain."
)

REWRITE_EXEMPLARS: list[tuple[str, str, str]] = [
    (
        "A baker makes 24 rolls in the morning and 18 in the afternoon. She sells 30 of them. How many rolls are "
        "left?",
        "She makes 24 + 18 = 42 rolls in total.\nAfter selling, 42 - 30 = 12 rolls are left.\n#### 12",
        "She makes [24 + 18 = y1] rolls in total.\nAfter selling, [y1 - 30 = y2] rolls are left.\n#### y2",
    ),
    (
        "Tickets cost $7 each. Ana buys 4 tickets and pays with a $50 bill. How much change does she get?",
        "The tickets cost 7 * 4 = $28.\nHer change is 50 - 28 = $22.\n#### 22",
        "The tickets cost $[7 * 4 = y1].\nHer change is $[50 - y1 = y2].\n#### y2",
    ),
    (
        "A tank holds 120 liters. It is 25% full. How many liters are needed to fill it?",
        "It holds 120 * 0.25 = 30 liters now.\nIt needs 120 - 30 = 90 more liters.\n#### 90",
        "It holds [120 * 0.25 = y1] liters now.\nIt needs [120 - y1 = y2] more liters.\n#### y2",
    ),
]


def rewrite_prompt(question: str, gold_cot: str,
                   exemplars: Sequence[tuple[str, str, str]] = REWRITE_EXEMPLARS) -> list[dict[str, str]]:
    """Few-shot chat messages asking a model to rewrite ``gold_cot`` into an abstract chain (§1.4 step 2).

    ``<<e=r>>`` annotations are stripped from the gold solution so the model sees plain text, as in the paper.
    """
    def clean(cot: str) -> str:
        return _ANNOT.sub("", cot).strip()

    msgs = [{"role": "system", "content": REWRITE_SYSTEM}]
    for q, cot, chain in exemplars:
        msgs.append({"role": "user", "content": f"Question: {q}\nSolution:\n{clean(cot)}"})
        msgs.append({"role": "assistant", "content": chain})
    msgs.append({"role": "user", "content": f"Question: {question}\nSolution:\n{clean(gold_cot)}"})
    return msgs


def rewrite_with_generator(generator: Any, rows: Sequence[Mapping[str, Any]], tools: Mapping[str, Any] | None = None,
                           params: Any = None, source: str = "gsm8k") -> list[dict[str, Any]]:
    """Rewrite each row's gold solution with ``generator`` (one batched call) and verify each chain (§1.4 step 3).

    ``params`` defaults to greedy decoding with 512 new tokens. Each record has ``verified`` and, when not
    verified, a ``reason``; a row without a gold answer is kept with that reason.
    """
    from loopwright.sdk.types import SamplingParams

    from .reify import default_math_tools

    tools = default_math_tools() if tools is None else tools
    params = params or SamplingParams(temperature=0.0, max_tokens=512)
    prompts = [rewrite_prompt(str(r.get("question", "")), str(r.get("answer", ""))) for r in rows]
    outs = generator.generate(prompts, params)
    records: list[dict[str, Any]] = []
    for i, (row, comps) in enumerate(zip(rows, outs, strict=True)):
        text = comps[0].text.strip() if comps else ""
        rec: dict[str, Any] = {"id": row.get("id", str(i)), "question": row.get("question"),
                               "gold_cot": row.get("answer"), "source": source, "chain": text, "coa_chain": text,
                               "route": "llm_rewrite"}
        try:
            gold = extract_gold_answer(str(row.get("answer", "")))
        except ValueError as e:
            records.append(rec | {"gold_answer": None, "verified": False, "answer": None,
                                  "reason": f"no gold answer: {e}"})
            continue
        ver = verify_chain(text, gold, tools)
        rec |= {"gold_answer": gold, "verified": ver["verified"], "answer": ver["answer"], "n_calls": ver["n_calls"]}
        if not ver["verified"]:
            rec["reason"] = ver["reason"]
        records.append(rec)
    return records

