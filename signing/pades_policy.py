"""The policy for PDFs received from other parties: which changes may follow a signature.

After a signature, only these changes are permitted:

* further signatures and their (invisible or visible) signature fields;
* document time-stamps and validation data (the DSS and its VRI entries);
* form filling, and only where the document was certified (DocMDP P=2 or
  P=3) to allow it; even then an existing appearance stream may not be
  rewritten in place (a "shadow replace" in the appearance of a field).

Anything else is a modification that makes the document TOTAL-FAILED, with a
reason naming it. pyHanko's own default policy is laxer: it permits filling
any form field after an approval signature, so a shadow "replace" attack
through a text field comes out as FORM_FILLING and passes. A signature whose
byte range does not cover the whole revision it belongs to fails outright.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from pyhanko.sign.diff_analysis import (
    DEFAULT_DIFF_POLICY,
    DiffPolicy,
    DiffResult,
    FormUpdatingRule,
    GenericFieldModificationRule,
    ModificationLevel,
    SigFieldCreationRule,
    SigFieldModificationRule,
    StandardDiffPolicy,
    SuspiciousModification,
)
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.validation.status import SignatureCoverageLevel

from .pades_changes import Change, ChangeKind
from .verdict import SubIndication, Verdict

# What DocMDP permission values mean, for the reader of a report.
DOCMDP_MEANING = {
    1: "no changes permitted",
    2: "form filling and signing permitted",
    3: "form filling, signing and annotations permitted",
}


def form_filling_permitted(docmdp: MDPPerm | None) -> bool:
    """Whether the document's certification allows its form to be filled in."""
    return docmdp is not None and docmdp.value >= MDPPerm.FILL_FORMS.value


@cache
def diff_policy(*, form_filling: bool) -> DiffPolicy:
    """pyHanko's difference policy for a received document.

    Without form filling, the form rule knows only signature fields, so a change
    to any other field is unexplained and pyHanko reports it as suspicious.
    """
    field_rules: list[object] = [
        SigFieldCreationRule(),  # type: ignore[no-untyped-call]
        SigFieldModificationRule(),
    ]
    if form_filling:
        field_rules.append(
            GenericFieldModificationRule(allow_in_place_appearance_stream_changes=False)
        )
    assert isinstance(DEFAULT_DIFF_POLICY, StandardDiffPolicy)
    return StandardDiffPolicy(
        # catalog, document info, xref and object streams, DSS, XMP metadata
        global_rules=DEFAULT_DIFF_POLICY.global_rules,
        form_rule=FormUpdatingRule(field_rules=field_rules),  # type: ignore[arg-type]
        reject_object_freeing=True,
        ignore_orphaned_objects=True,
        ignore_identical_objects=True,
    )


def describe_coverage(
    coverage: SignatureCoverageLevel | None, revision: int, total_revisions: int
) -> tuple[str, Verdict | None]:
    """What a signature covers, and a failure when that is not a whole revision."""
    if coverage is SignatureCoverageLevel.ENTIRE_FILE:
        return "the whole file", None
    if coverage is SignatureCoverageLevel.ENTIRE_REVISION:
        return f"revision {revision + 1} of {total_revisions}", None
    what = (
        "a contiguous block that ends before its revision does"
        if coverage is SignatureCoverageLevel.CONTIGUOUS_BLOCK_FROM_START
        else "an odd, gapped or overlapping byte range"
    )
    return what, Verdict.failed(
        SubIndication.FORMAT_FAILURE,
        f"the signature does not cover the whole revision it belongs to: it covers {what}",
    )


# Changes the policy refuses whatever pyHanko's analysis says (belt and braces).
_NEVER = frozenset(
    {
        ChangeKind.PAGES,
        ChangeKind.PAGE_CONTENT,
        ChangeKind.ANNOTATION,
        ChangeKind.FORM_FIELD_STRUCTURE,
        ChangeKind.FORM_FIELD_APPEARANCE,
    }
)
# Changes that are part of signing and archiving: always permitted.
_MAINTENANCE = frozenset(
    {
        ChangeKind.SIGNATURE,
        ChangeKind.SIGNATURE_FIELD,
        ChangeKind.DOCUMENT_TIMESTAMP,
        ChangeKind.VALIDATION_DATA,
    }
)


@dataclass(frozen=True)
class ChangeJudgment:
    """The policy's answer on the changes made after one signature."""

    level: str  # NONE, LTA_UPDATES, FORM_FILLING, ANNOTATIONS, OTHER
    permitted: bool
    reasons: tuple[str, ...] = ()
    changed_fields: tuple[str, ...] = ()
    verdict: Verdict | None = None


def judge_changes(
    diff: DiffResult | SuspiciousModification | None,
    *,
    docmdp: MDPPerm | None,
    changes: Sequence[Change] = (),
) -> ChangeJudgment:
    """Judge the changes after a signature by the policy for received documents.

    ``diff`` is pyHanko's difference analysis under `diff_policy`; ``changes``
    are the changes Rogatory named itself (pages, annotations, fields), which
    make a reason readable where pyHanko's names object numbers.
    """
    if diff is None:
        return ChangeJudgment("NONE", True)
    offending = [c for c in changes if c.kind not in _MAINTENANCE]
    if isinstance(diff, SuspiciousModification):
        detail = "; ".join(map(str, offending)) or _first_line(str(diff))
        return _refused("OTHER", (), f"{_MODIFIED}: {detail}", _first_line(str(diff)))
    level = diff.modification_level
    fields = tuple(sorted(diff.changed_form_fields))
    never = [c for c in offending if c.kind in _NEVER]
    if never or level not in _LEVELS:
        detail = "; ".join(map(str, never)) or f"changes at level {level.name}"
        return _refused(level.name, fields, f"{_MODIFIED}: {detail}")
    filled = [c for c in offending if c.kind is ChangeKind.FORM_FIELD_VALUE]
    if docmdp is MDPPerm.NO_CHANGES and level.value > ModificationLevel.LTA_UPDATES.value:
        detail = "; ".join(str(c) for c in changes) or ", ".join(fields)
        return _refused(
            level.name,
            fields,
            "the document was certified with DocMDP P=1 (no changes permitted), "
            f"yet it was changed after the certification: {detail}",
        )
    if filled and not form_filling_permitted(docmdp):
        return _refused(
            level.name,
            fields,
            "form fields were changed after signing and the document is not certified "
            "to allow form filling: " + "; ".join(map(str, filled)),
        )
    if level is ModificationLevel.FORM_FILLING and not filled and not fields:
        return ChangeJudgment(level.name, True, ("appearance of signatures",), fields)
    reasons = ["further signatures" if not filled else "form filling, permitted by certification"]
    return ChangeJudgment(level.name, True, tuple(reasons), fields)


_MODIFIED = "the document was modified after it was signed, beyond what the policy permits"
_LEVELS = (ModificationLevel.NONE, ModificationLevel.LTA_UPDATES, ModificationLevel.FORM_FILLING)


def _refused(
    level: str, fields: tuple[str, ...], reason: str, library_reason: str | None = None
) -> ChangeJudgment:
    return ChangeJudgment(
        level,
        False,
        (library_reason or reason,),
        fields,
        Verdict.failed(SubIndication.HASH_FAILURE, reason),
    )


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unexplained change"
    return line if len(line) <= 300 else line[:297] + "..."
