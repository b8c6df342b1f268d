"""The visible signature box of a PAdES signature: where it goes and what it shows."""

from __future__ import annotations

from dataclasses import dataclass

from pyhanko.sign import fields
from pyhanko.stamp import TextStampStyle

from .errors import SigningError

# pyHanko fills %(signer)s from the certificate and %(ts)s with the signing time;
# %(reason)s comes from the appearance text parameters given at signing.
STAMP_TEXT = "Digitally signed by %(signer)s\nTime: %(ts)s\nReason: %(reason)s"
_MAX_COORDINATE = 14_400  # PDF's implementation limit for a page side (ISO 32000, C.2)


@dataclass(frozen=True)
class VisibleBox:
    """A signature box on page ``page`` (1-based), corners (x1, y1) and (x2, y2) in points.

    Coordinates are PDF user space: the origin is the page's lower left corner.
    """

    page: int
    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        if self.page < 1:
            raise SigningError(f"the signature box's page must be 1 or more, not {self.page}")
        corners = (self.x1, self.y1, self.x2, self.y2)
        if any(not 0 <= c <= _MAX_COORDINATE for c in corners):
            raise SigningError(
                f"the signature box's coordinates must lie between 0 and {_MAX_COORDINATE}"
            )
        if self.x2 - self.x1 < 1 or self.y2 - self.y1 < 1:
            raise SigningError(
                "the signature box is empty: x2 must exceed x1 and y2 must exceed y1"
            )

    @classmethod
    def parse(cls, text: str) -> VisibleBox:
        """``"PAGE,X1,Y1,X2,Y2"``, e.g. ``"1,50,50,250,120"`` (page 1-based, points)."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 5:
            raise SigningError(
                f"a signature box is PAGE,X1,Y1,X2,Y2 (e.g. 1,50,50,250,120), not {text!r}"
            )
        try:
            page = int(parts[0])
            x1, y1, x2, y2 = (float(p) for p in parts[1:])
        except ValueError:
            raise SigningError(
                f"a signature box is PAGE,X1,Y1,X2,Y2 with numbers, not {text!r}"
            ) from None
        return cls(page, x1, y1, x2, y2)

    def field_spec(self, name: str, pages: int) -> fields.SigFieldSpec:
        """pyHanko's description of a new signature field with this box as its widget."""
        if self.page > pages:
            raise SigningError(
                f"the signature box is on page {self.page}, but the PDF has {pages} page(s)"
            )
        box = (round(self.x1), round(self.y1), round(self.x2), round(self.y2))
        return fields.SigFieldSpec(sig_field_name=name, on_page=self.page - 1, box=box)


def stamp_style(reason: str | None) -> TextStampStyle:
    """A plain text stamp: the signer's name, the signing time and the reason."""
    del reason  # the reason is filled in as a text parameter at signing time
    return TextStampStyle(stamp_text=STAMP_TEXT, timestamp_format="%Y-%m-%d %H:%M:%S %Z")
