"""Side-by-side figure of two sample grids with titles (benchmarks/results/images/digits-maskgit-vs-pgm.png)."""
import sys

from PIL import Image, ImageDraw

paths, titles, out = sys.argv[1:3], sys.argv[3:5], sys.argv[5]
grids = [Image.open(p).convert("RGB") for p in paths]
gap, top = 16, 18
canvas = Image.new("RGB", (sum(g.width for g in grids) + gap, max(g.height for g in grids) + top), "white")
draw = ImageDraw.Draw(canvas)
x = 0
for g, t in zip(grids, titles):
    canvas.paste(g, (x, top))
    draw.text((x + 42, 3), t, fill=(0, 0, 0))
    x += g.width + gap
canvas.save(out)
