"""The demo classes as mask drawings: each function fills its class's shape or pattern into a box.

A function takes a PIL drawing of an "L" box of `w` x `h` pixels and the image's random
generator, and draws the class in value 255 on 0. `worklab.data.demo` places and colours
the box. The first ten (`BASIC`) are distinct at 32 px; the rest (`CONFUSABLE`) are each
close to one of them (a frame to a square and a ring, a diagonal cross to a plus, a
grid to a checkerboard, ...), for the demo set's hard variant.
"""

import math

def _period(w, h, rng):
    """Pick a pattern period in pixels: 2.5 to 4 repeats across the box, never under 4 px."""
    return max(4, round(min(w, h) / rng.uniform(2.5, 4.0)))


def _circle(draw, w, h, rng):
    """Fill the box with an ellipse."""
    draw.ellipse((0, 0, w - 1, h - 1), fill=255)


def _square(draw, w, h, rng):
    """Fill the whole box."""
    draw.rectangle((0, 0, w - 1, h - 1), fill=255)


def _triangle(draw, w, h, rng):
    """Fill a triangle with its base on the top or bottom edge and its apex anywhere on the other."""
    apex = int(rng.integers(w))
    top, bottom = (0, h - 1) if rng.random() < 0.5 else (h - 1, 0)
    draw.polygon([(apex, top), (0, bottom), (w - 1, bottom)], fill=255)


def _cross(draw, w, h, rng):
    """Draw a plus sign: one centred vertical and one centred horizontal bar."""
    thickness = rng.uniform(0.2, 0.35)
    bar_w, bar_h = max(2, round(w * thickness)), max(2, round(h * thickness))
    draw.rectangle(((w - bar_w) // 2, 0, (w - bar_w) // 2 + bar_w - 1, h - 1), fill=255)
    draw.rectangle((0, (h - bar_h) // 2, w - 1, (h - bar_h) // 2 + bar_h - 1), fill=255)


def _ring(draw, w, h, rng):
    """Draw a thick elliptical outline: a circle with a hole."""
    width = max(2, round(min(w, h) * rng.uniform(0.12, 0.22)))
    draw.ellipse((0, 0, w - 1, h - 1), outline=255, width=width)


def _hstripes(draw, w, h, rng):
    """Draw horizontal bars, half a period thick, at a random phase."""
    period = _period(w, h, rng)
    for y in range(-int(rng.integers(period)), h, period):
        draw.rectangle((0, y, w - 1, y + period // 2 - 1), fill=255)


def _vstripes(draw, w, h, rng):
    """Draw vertical bars, half a period thick, at a random phase."""
    period = _period(w, h, rng)
    for x in range(-int(rng.integers(period)), w, period):
        draw.rectangle((x, 0, x + period // 2 - 1, h - 1), fill=255)


def _checker(draw, w, h, rng):
    """Draw a checkerboard of period-sized cells at a random phase (smaller cells blur at 32 px)."""
    cell = _period(w, h, rng)
    x0, y0 = -int(rng.integers(2 * cell)), -int(rng.integers(2 * cell))
    for row, y in enumerate(range(y0, h, cell)):
        for col, x in enumerate(range(x0, w, cell)):
            if (row + col) % 2 == 0:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=255)


def _diagonal(draw, w, h, rng):
    """Draw 45-degree bars leaning left or right, half a period wide, at a random phase."""
    period = _period(w, h, rng)
    mirror = rng.random() < 0.5
    for x in range(-h - int(rng.integers(period)), w, period):
        bar = [(x, 0), (x + period // 2, 0), (x + period // 2 + h, h), (x + h, h)]
        draw.polygon([(w - 1 - px if mirror else px, py) for px, py in bar], fill=255)


def _dots(draw, w, h, rng):
    """Draw a square grid of small round dots at a random phase."""
    period = _period(w, h, rng)
    radius = max(1.5, period * rng.uniform(0.22, 0.32))
    x0, y0 = int(rng.integers(period)), int(rng.integers(period))
    for cy in range(y0, h, period):
        for cx in range(x0, w, period):
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)


def _frame(draw, w, h, rng):
    """Draw a thick rectangular outline: a square with a hole."""
    width = max(2, round(min(w, h) * rng.uniform(0.12, 0.22)))
    draw.rectangle((0, 0, w - 1, h - 1), outline=255, width=width)


def _diamond(draw, w, h, rng):
    """Fill a rhombus touching the middle of each side of the box."""
    draw.polygon([(w / 2, 0), (w - 1, h / 2), (w / 2, h - 1), (0, h / 2)], fill=255)


def _polygon(w, h, radii, turn):
    """Corners of a star or polygon inscribed in the box: radii[i] (a fraction) at equal angles from `turn`."""
    return [(w / 2 + w / 2 * r * math.cos(turn + 2 * math.pi * i / len(radii)),
             h / 2 + h / 2 * r * math.sin(turn + 2 * math.pi * i / len(radii))) for i, r in enumerate(radii)]


def _hexagon(draw, w, h, rng):
    """Fill a hexagon at a random turn: close to a circle at low resolution."""
    draw.polygon(_polygon(w, h, [1.0] * 6, rng.uniform(0, math.pi / 3)), fill=255)


def _star(draw, w, h, rng):
    """Fill a five-pointed star at a random turn: close to a cross or a hexagon at low resolution."""
    inner = rng.uniform(0.35, 0.5)
    draw.polygon(_polygon(w, h, [1.0, inner] * 5, rng.uniform(0, 2 * math.pi)), fill=255)


def _xcross(draw, w, h, rng):
    """Draw an X: two thick bars from corner to corner (a plus sign turned by 45 degrees)."""
    width = max(2, round(min(w, h) * rng.uniform(0.2, 0.3)))
    draw.line((0, 0, w - 1, h - 1), fill=255, width=width)
    draw.line((0, h - 1, w - 1, 0), fill=255, width=width)


def _bars(w, h, rng):
    """Bar thickness (width, height) in pixels for the letter-like shapes, as for the cross."""
    thickness = rng.uniform(0.2, 0.35)
    return max(2, round(w * thickness)), max(2, round(h * thickness))


def _tee(draw, w, h, rng):
    """Draw a T, upright or upside down: a cross whose horizontal bar sits on an edge."""
    bar_w, bar_h = _bars(w, h, rng)
    y = 0 if rng.random() < 0.5 else h - bar_h
    draw.rectangle((0, y, w - 1, y + bar_h - 1), fill=255)
    draw.rectangle(((w - bar_w) // 2, 0, (w - bar_w) // 2 + bar_w - 1, h - 1), fill=255)


def _ell(draw, w, h, rng):
    """Draw an L in any of its four mirror images: one vertical and one horizontal bar on two edges that meet."""
    bar_w, bar_h = _bars(w, h, rng)
    x = 0 if rng.random() < 0.5 else w - bar_w
    y = 0 if rng.random() < 0.5 else h - bar_h
    draw.rectangle((x, 0, x + bar_w - 1, h - 1), fill=255)
    draw.rectangle((0, y, w - 1, y + bar_h - 1), fill=255)


def _semicircle(draw, w, h, rng):
    """Fill half an ellipse with its flat side on the top or bottom edge: between a circle and a triangle."""
    if rng.random() < 0.5:
        draw.pieslice((0, 0, w - 1, 2 * h - 1), 180, 360, fill=255)
    else:
        draw.pieslice((0, -h, w - 1, h - 1), 0, 180, fill=255)


def _crescent(draw, w, h, rng):
    """Fill an ellipse and cut a shifted copy out of it, leaving a crescent open to the left or right."""
    shift = round(w * rng.uniform(0.3, 0.5)) * (1 if rng.random() < 0.5 else -1)
    draw.ellipse((0, 0, w - 1, h - 1), fill=255)
    draw.ellipse((shift, 0, w - 1 + shift, h - 1), fill=0)


def _target(draw, w, h, rng):
    """Draw a bullseye: a thin elliptical ring around a centred disc (a ring with a centre)."""
    width = max(1, round(min(w, h) * rng.uniform(0.08, 0.14)))
    draw.ellipse((0, 0, w - 1, h - 1), outline=255, width=width)
    inset = rng.uniform(0.3, 0.36)
    draw.ellipse(((w - 1) * inset, (h - 1) * inset, (w - 1) * (1 - inset), (h - 1) * (1 - inset)), fill=255)


def _grid(draw, w, h, rng):
    """Draw a lattice of thin horizontal and vertical lines at a random phase (a checkerboard's outline)."""
    period = _period(w, h, rng)
    thick = max(1, period // 4)
    for x in range(int(rng.integers(period)), w, period):
        draw.rectangle((x, 0, x + thick - 1, h - 1), fill=255)
    for y in range(int(rng.integers(period)), h, period):
        draw.rectangle((0, y, w - 1, y + thick - 1), fill=255)


def _zigzag(draw, w, h, rng):
    """Draw horizontal zigzag bands, half a period thick, at a random phase (bent stripes)."""
    period = _period(w, h, rng)
    half = period / 2
    for y in range(-int(rng.integers(period)), h + period, period):
        points = [(x, y + (half if (x // period) % 2 else 0)) for x in range(0, w + period, period)]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            draw.polygon([(x0, y0), (x1, y1), (x1, y1 + half), (x0, y0 + half)], fill=255)


_BASIC = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "ring": _ring,
    "hstripes": _hstripes,
    "vstripes": _vstripes,
    "checker": _checker,
    "diagonal": _diagonal,
    "dots": _dots,
}
_CONFUSABLE = {
    "frame": _frame,
    "diamond": _diamond,
    "hexagon": _hexagon,
    "star": _star,
    "xcross": _xcross,
    "tee": _tee,
    "ell": _ell,
    "semicircle": _semicircle,
    "crescent": _crescent,
    "target": _target,
    "grid": _grid,
    "zigzag": _zigzag,
}
DRAW = {**_BASIC, **_CONFUSABLE}  # class name -> mask drawing function
BASIC = tuple(_BASIC)
CONFUSABLE = tuple(_CONFUSABLE)
