"""Shared data for the search tests (no tests here): a small corpus on distinct topics, and queries that
paraphrase each file without sharing its words."""

from __future__ import annotations

from pathlib import Path

__all__ = ["TEXT_FILES", "QUERIES", "PDF_LINES", "DOCX_PARAGRAPHS", "HANDBOOK_FIRE_LINE", "FIRE_SECTION",
           "FIRE_QUERY", "make_pdf", "write_corpus", "handbook"]

TEXT_FILES: dict[str, str] = {
    "cooking/bread.md": (
        "# Sourdough\n\nMix flour, water and salt with the starter. Knead the dough, let it rise overnight in a\n"
        "cool kitchen, then bake it in a very hot oven until the crust turns golden and crackles.\n"),
    "garden/tomatoes.txt": (
        "Tomatoes want six hours of sun. Stake the seedlings, water the soil deeply twice a week,\n"
        "pinch off suckers and add compost in June. Harvest when the fruit is red and slightly soft.\n"),
    "finance/taxes.md": (
        "Income tax return checklist: collect W-2 forms, deductions and receipts; file before\n"
        "April 15 to avoid penalties from the IRS, or request an extension.\n"),
    "pets/cat_care.md": (
        "Cats need fresh water, a clean litter box and a scratching post. Brush long-haired breeds\n"
        "weekly and take the kitten to the vet for vaccinations.\n"),
    "travel/japan.md": (
        "Two weeks in Kyoto and Tokyo: temples, shrines, ramen, and the shinkansen bullet train\n"
        "between cities. Buy a JR rail pass before you fly.\n"),
    "code/sort.py": (
        "def quicksort(items):\n"
        "    if len(items) <= 1:\n"
        "        return items\n"
        "    pivot, *rest = items\n"
        "    smaller = [x for x in rest if x < pivot]\n"
        "    larger = [x for x in rest if x >= pivot]\n"
        "    return quicksort(smaller) + [pivot] + quicksort(larger)\n"),
    "health/running.md": (
        "Marathon plan: build weekly mileage slowly, one long run every Sunday, taper in the final\n"
        "two weeks, and carb-load before the 42 km event.\n"),
    "music/guitar.md": (
        "Guitar basics: tune the strings E A D G B E, practise the G, C and D chords, and strum\n"
        "slowly with a metronome until changes are clean.\n"),
    "astronomy/mars.txt": (
        "Mars has a thin carbon dioxide atmosphere, two small moons named Phobos and Deimos, and\n"
        "Olympus Mons, the tallest volcano in the solar system.\n"),
    "cars/oil_change.md": (
        "Every 8,000 km: drain the engine oil while warm, replace the filter, refill with 5W-30\n"
        "and check the dipstick level.\n"),
    "history/rome.md": (
        "Augustus became the first emperor after the republic fell; legions guarded the frontier\n"
        "and aqueducts carried water to the capital for centuries.\n"),
}

PDF_LINES = ["Photosynthesis: chloroplasts capture sunlight and turn water and carbon dioxide",
             "into glucose and oxygen."]
DOCX_PARAGRAPHS = ["Quarterly review",
                   "Sales grew by twelve percent in the third quarter, driven by new customers in Germany.",
                   "Churn fell after the new onboarding programme."]

# query -> the file that must rank first. No query word of five letters or more appears in its file.
QUERIES: dict[str, str] = {
    "how do I make a loaf at home": "/cooking/bread.md",
    "raising vegetables in my backyard plot": "/garden/tomatoes.txt",
    "paying what I owe the government on my earnings": "/finance/taxes.md",
    "looking after a feline companion": "/pets/cat_care.md",
    "vacation itinerary in East Asia": "/travel/japan.md",
    "algorithm that orders a list of numbers": "/code/sort.py",
    "preparing for a long distance race": "/health/running.md",
    "learning to play an acoustic instrument": "/music/guitar.md",
    "the planet next to Earth": "/astronomy/mars.txt",
    "vehicle maintenance replacing lubricant": "/cars/oil_change.md",
    "ancient Mediterranean empire ruled by Caesars": "/history/rome.md",
    "how green plants feed themselves using solar energy": "/science/photosynthesis.pdf",
    "how much did our turnover increase last period": "/work/review.docx",
}

HANDBOOK_FIRE_LINE = 41
FIRE_SECTION = ["## Fire safety", "If the fire alarm rings, stop work and leave by the nearest stairway.",
                "Do not use the lifts.", "Gather in the car park and wait for the warden's roll call."]
FIRE_QUERY = "leaving the building by the stairs when the fire alarm rings"


def handbook() -> str:
    """A long file whose fire-drill section sits at HANDBOOK_FIRE_LINE, far from its start."""
    lines = ["# Office handbook", ""]
    topics = ["Holidays are booked through the HR portal two weeks ahead.",
              "Expense claims need a receipt and a manager's approval.",
              "Desks are shared; clear yours every evening.",
              "The coffee machine is descaled on Fridays."]
    while len(lines) < HANDBOOK_FIRE_LINE - 1:
        lines.append(topics[len(lines) % len(topics)])
        lines.append("")
    lines += FIRE_SECTION
    lines += ["", *(topics[i % len(topics)] for i in range(40))]
    assert lines[HANDBOOK_FIRE_LINE - 1] == FIRE_SECTION[0]
    return "\n".join(lines) + "\n"


def make_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with text in Helvetica, written by hand (no PDF writer is needed)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td", *(f"({esc(line)}) Tj T*" for line in lines), "ET"]
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_corpus(root: Path) -> None:
    import docx

    for rel, text in TEXT_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "science").mkdir(exist_ok=True)
    (root / "science/photosynthesis.pdf").write_bytes(make_pdf(PDF_LINES))
    (root / "work").mkdir(exist_ok=True)
    document = docx.Document()
    document.add_heading(DOCX_PARAGRAPHS[0], level=1)
    for text in DOCX_PARAGRAPHS[1:]:
        document.add_paragraph(text)
    document.save(str(root / "work/review.docx"))
    (root / "handbook.md").write_text(handbook(), encoding="utf-8")
