"""Draw the example images shipped in examples/images (run once; the PNGs are committed)."""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent / "images"


def kitchen() -> Image.Image:
    """A flat drawing of a table with a loaf of bread and a cup."""
    image = Image.new("RGB", (336, 336), (235, 242, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 220, 336, 336), fill=(150, 110, 70))  # table
    draw.ellipse((60, 150, 200, 230), fill=(205, 150, 80), outline=(120, 80, 40), width=3)  # bread
    draw.rectangle((230, 160, 280, 225), fill=(250, 250, 250), outline=(90, 90, 90), width=3)  # cup
    draw.arc((270, 175, 300, 205), start=270, end=90, fill=(90, 90, 90), width=3)
    draw.ellipse((250, 30, 310, 90), fill=(255, 210, 60))  # sun through the window
    return image


def typography() -> Image.Image:
    """A FigStep-style typographic prompt with a benign task: an empty numbered list."""
    image = Image.new("RGB", (760, 760), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    lines = ["Steps to bake", "bread at home.", "1.", "2.", "3."]
    for index, line in enumerate(lines):
        draw.text((30, 40 + index * 110), line, fill="black", font=font)
    return image


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    kitchen().save(HERE / "kitchen.png", optimize=True)
    typography().save(HERE / "steps.png", optimize=True)
