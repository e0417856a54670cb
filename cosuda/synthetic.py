"""The embedded default benchmark: small procedural GTA5-, SYNTHIA- and Cityscapes-like datasets.

Real GTA5, SYNTHIA and Cityscapes cannot be downloaded here, so every notebook and test runs on
three generated datasets written in *exactly* the download layouts (``cosuda.data`` reads them
unchanged)::

    OUT/gta5/images/00001.png        OUT/gta5/labels/00001.png        palette PNG of labelIds
    OUT/synthia/RGB/0000000.png      OUT/synthia/GT/LABELS/0000000.png 16-bit, id in red channel
    OUT/cityscapes/leftImg8bit/{train,val,dev}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    OUT/cityscapes/gtFine/{train,val,dev}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The target has three splits: ``train`` (its labels are never read by adaptation), ``val`` (the
reporting split) and ``dev``, a labelled split in val's format that real Cityscapes does not
have: hyper-parameters are chosen on it so that val is used only to report
(docs/preregistration.md). Each split is drawn from a random stream of its own, so dev shares no
image with train or val, and adding it changed no byte of the other files.

Each image is a street scene seen by a pinhole camera (road, sidewalks, buildings with windows,
walls, fences, poles, traffic lights and signs, trees, terrain, sky, people, riders and
vehicles), drawn once into the image and once into the label with the same geometry. The
domain gap mimics game renders vs. real photographs:

- appearance: the sources are saturated, clean and sharp with hard shadows; the target is
  desaturated, overcast, cooler, with other hues for buildings/vegetation/sky, a textured
  road, blur, vignetting and sensor noise. ``gap`` (0..1) blends the target's appearance
  from the GTA5-like style (0) to the full Cityscapes-like style (1);
- layout: horizon height, focal length (the target zooms in like Cityscapes' narrow lens),
  an ego-vehicle hood in the target, SYNTHIA's high surveillance-like viewpoint;
- class frequencies: more people and bicycles in the target (fewer trucks per image, though the
  narrower lens draws them larger); SYNTHIA has only its 16 classes (no terrain, truck or train);
- object scale: objects stand within OBJECT_DEPTH and thin things are drawn THIN times thicker
  than their real size, so that every class covers pixels at the training resolution.

Shapes and layout are shared, so adaptation has something to align. Generation is
deterministic: image ``i`` of a domain depends only on ``(seed, domain, i)``, and PNGs carry
no timestamps, so the same seed gives byte-identical files. Re-running over an existing
output regenerates it (its old files are removed first).

CLI: ``python -m cosuda.synthetic --out DIR --seed N`` (see ``--help``).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from cosuda import labels
from cosuda.cli import prog

__all__ = ["DEFAULT_ROOT", "SyntheticConfig", "generate", "ensure", "is_complete", "interrupted",
           "recorded", "predates_dev", "regenerate_command", "Domain", "make_domain",
           "render_scene", "main"]

from cosuda.paths import SYNTHETIC_ROOT as DEFAULT_ROOT  # noqa: E402  (<HOME>/data/synthetic)
MARKER = "cosuda_synthetic.json"
# Bump when the drawing changes: ensure() and training then regenerate. Not bumped for the dev
# split (issue 22), which changed no byte of the other files: a benchmark written before it has a
# marker without "cityscapes_dev_count" (`predates_dev`), which ensure() regenerates once, and a
# run with eval_split=dev regenerates too; every other run keeps using it.
GENERATOR_VERSION = 2

TRAIN_CITIES = ("aachen", "bochum", "bremen", "cologne")
VAL_CITIES = ("frankfurt", "lindau", "munster")
DEV_CITIES = ("berlin", "bielefeld", "bonn")  # real Cityscapes' test cities: no name is shared


@dataclass
class SyntheticConfig:
    """Image counts and resolutions (W, H) of the three generated datasets. The Cityscapes-like
    target has three splits: train, val (reporting) and dev (choosing hyper-parameters)."""

    gta5_count: int = 360
    synthia_count: int = 360
    cityscapes_train_count: int = 360
    cityscapes_val_count: int = 100
    cityscapes_dev_count: int = 100
    gta5_size: tuple = (320, 180)
    synthia_size: tuple = (320, 190)
    cityscapes_size: tuple = (320, 160)
    gap: float = 1.0  # 0: the target looks like the GTA5-like source; 1: the full real-like style

    def __post_init__(self):
        for field in ("gta5_size", "synthia_size", "cityscapes_size"):
            size = tuple(int(v) for v in getattr(self, field))
            if len(size) != 2 or min(size) < 16:
                raise ValueError(f"{field} must be (W, H) with both at least 16, got {size}")
            setattr(self, field, size)
        for field in ("gta5_count", "synthia_count", "cityscapes_train_count", "cityscapes_val_count",
                      "cityscapes_dev_count"):
            if int(getattr(self, field)) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        if not 0.0 <= float(self.gap) <= 1.0:
            raise ValueError(f"gap must be in [0, 1], got {self.gap}")


# ------------------------------------------------------------------------------------------
# Label codes drawn into the label canvas, converted to each dataset's raw ids when written
# ------------------------------------------------------------------------------------------
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)
EGO, STATIC, LANE, RAIL, UNLABELED = 200, 201, 202, 203, 204  # all map to ignore, except LANE

_EXTRA_CITYSCAPES = {EGO: 1, STATIC: 4, LANE: 7, RAIL: 10, UNLABELED: 0}  # lane marks are road
_EXTRA_SYNTHIA = {EGO: 0, STATIC: 0, LANE: 22, RAIL: 0, UNLABELED: 0}     # 22 = lanemarking


def _code_table(train_to_raw: dict, extra: dict) -> np.ndarray:
    table = np.zeros(256, dtype=np.uint16)
    for code, raw in list(train_to_raw.items()) + list(extra.items()):
        table[code] = raw
    return table


CODE_TO_LABELID = _code_table(labels.TRAIN_TO_CITYSCAPES, _EXTRA_CITYSCAPES)
CODE_TO_SYNTHIA = _code_table(labels.TRAIN_TO_SYNTHIA, _EXTRA_SYNTHIA)

# The palette real GTA5 label PNGs carry: Cityscapes colours indexed by labelId.
_GTA5_PALETTE = np.zeros((256, 3), dtype=np.uint8)
for _train, _label_id in labels.TRAIN_TO_CITYSCAPES.items():
    _GTA5_PALETTE[_label_id] = labels.PALETTE[_train]
_GTA5_PALETTE[[5, 6, 9, 10]] = [(111, 74, 0), (81, 0, 81), (250, 170, 160), (230, 150, 140)]


# ------------------------------------------------------------------------------------------
# Domains: layout, class frequencies and appearance
# ------------------------------------------------------------------------------------------
# Colours are RGB 0..255 choices per part; an instance picks one and jitters it.
_GAME_COLOURS = {
    "road": [(88, 88, 94), (102, 98, 98)], "lane": [(235, 235, 225)],
    "sidewalk": [(178, 168, 152), (160, 160, 166)],
    "building": [(150, 140, 130), (186, 176, 160), (120, 126, 142), (204, 170, 140), (112, 100, 96)],
    "window": [(58, 76, 112), (92, 112, 146)],
    "wall": [(172, 160, 140), (140, 136, 130)], "fence": [(124, 106, 84), (150, 150, 152)],
    "pole": [(100, 100, 106), (72, 76, 70)], "light": [(36, 36, 30), (62, 62, 22)],
    "sign": [(30, 70, 190), (210, 30, 30), (230, 190, 30)],
    "vegetation": [(52, 132, 34), (72, 152, 44), (44, 112, 40)],
    "terrain": [(126, 152, 64), (150, 142, 88)],
    "sky_top": [(64, 136, 232)], "sky_bottom": [(172, 206, 246)],
    "skin": [(226, 182, 150), (162, 112, 80), (112, 76, 50)],
    "clothes": [(200, 40, 40), (40, 60, 160), (230, 230, 220), (30, 30, 30), (60, 140, 60), (220, 160, 40)],
    "car": [(200, 20, 20), (20, 50, 170), (232, 232, 232), (26, 26, 26), (160, 160, 170), (232, 200, 20), (20, 120, 60)],
    "truck": [(212, 212, 206), (232, 122, 30), (50, 90, 160)],
    "bus": [(232, 190, 40), (40, 110, 200), (220, 60, 50)],
    "train": [(212, 212, 216), (220, 60, 50)],
    "motorcycle": [(30, 30, 30), (200, 30, 30), (30, 60, 170)],
    "bicycle": [(40, 40, 40), (30, 90, 170), (200, 30, 30)],
    "glass": [(40, 50, 70)], "tyre": [(22, 22, 22)], "static": [(96, 72, 48), (60, 90, 60)],
    "ego": [(24, 24, 28)], "rail": [(110, 100, 90)],
}
_SYNTHIA_COLOURS = dict(_GAME_COLOURS, **{
    "road": [(70, 68, 74), (84, 80, 86)], "sidewalk": [(176, 126, 104), (150, 140, 120)],
    "building": [(200, 196, 186), (150, 96, 80), (96, 110, 150), (220, 200, 150)],
    "vegetation": [(60, 164, 60), (40, 130, 70)],
    "sky_top": [(96, 160, 236)], "sky_bottom": [(200, 220, 246)],
})
_REAL_COLOURS = dict(_GAME_COLOURS, **{
    "road": [(122, 116, 120), (110, 108, 114)], "lane": [(200, 200, 196)],
    "sidewalk": [(150, 140, 130), (136, 130, 128)],
    "building": [(176, 160, 130), (150, 124, 100), (190, 186, 176), (132, 120, 114), (166, 146, 140)],
    "window": [(46, 50, 56), (72, 72, 72)],
    "wall": [(160, 150, 130), (122, 118, 110)], "fence": [(100, 96, 86), (120, 124, 120)],
    "pole": [(124, 124, 118), (90, 94, 96)],
    "vegetation": [(66, 116, 40), (86, 126, 56), (54, 96, 36)],
    "terrain": [(136, 130, 86), (116, 126, 72)],
    "sky_top": [(128, 162, 206)], "sky_bottom": [(196, 210, 226)],
    "clothes": [(40, 40, 46), (70, 70, 82), (112, 90, 70), (30, 40, 70), (150, 150, 150), (120, 30, 30)],
    "car": [(30, 30, 30), (200, 200, 200), (120, 120, 126), (60, 70, 90), (150, 30, 30), (222, 222, 216)],
    "truck": [(190, 190, 186), (80, 80, 86)], "bus": [(220, 220, 210), (180, 40, 40)],
    "train": [(200, 200, 196), (170, 50, 50)],
    "bicycle": [(30, 30, 30), (60, 60, 66)],
})

# Texture amplitude per label code: (coarse blotches, fine grain), relative to the colour.
_GAME_TEXTURE = {"default": (0.03, 0.015), ROAD: (0.04, 0.02), VEGETATION: (0.14, 0.10),
                 TERRAIN: (0.08, 0.05), BUILDING: (0.05, 0.02), SKY: (0.01, 0.0)}
_REAL_TEXTURE = {"default": (0.06, 0.03), ROAD: (0.10, 0.10), SIDEWALK: (0.08, 0.08),
                 VEGETATION: (0.22, 0.16), TERRAIN: (0.14, 0.10), BUILDING: (0.10, 0.04),
                 SKY: (0.02, 0.0)}

_GAME_LOOK = dict(saturation=1.15, white_balance=(1.04, 1.0, 0.94), gamma=1.0, contrast=1.1,
                  exposure=1.0, blur=0.0, noise=0.004, vignette=0.0, shadow=0.55, jitter=10.0)
_SYNTHIA_LOOK = dict(_GAME_LOOK, saturation=1.05, white_balance=(1.0, 1.0, 1.02), shadow=0.7,
                     contrast=1.0, noise=0.0)
_REAL_LOOK = dict(saturation=0.75, white_balance=(0.96, 1.0, 1.02), gamma=1.15, contrast=0.88,
                  exposure=0.95, blur=0.8, noise=0.022, vignette=0.3, shadow=0.88, jitter=14.0)


@dataclass
class Domain:
    """Everything that distinguishes one generated dataset from another."""

    name: str
    horizon: tuple          # horizon row as a fraction of H (uniform range)
    camera_height: tuple    # metres
    focal: float            # focal length as a fraction of W
    road_half_width: tuple  # metres
    counts: dict            # expected objects per image (Poisson rates)
    colours: dict
    texture: dict
    look: dict
    ground_code: int = TERRAIN    # what lies beyond the sidewalks
    ego_hood: float = 0.0        # height of the ego-vehicle hood as a fraction of H
    overcast: float = 0.0        # share of overcast days: greyer sky, no hard shadows
    codes: np.ndarray = dataclasses.field(default_factory=lambda: CODE_TO_LABELID)


# Rates are set so that every class is in enough images to be learnt from a few hundred
# (the rare classes of the real data -- train, bus, motorcycle, bicycle, rider -- included), while
# the frequencies still differ between the domains as in the real data (the target: more
# people and bicycles, fewer trucks per image; SYNTHIA: crowds, no truck or train).
_GTA5_COUNTS = dict(car=5.0, truck=1.0, bus=0.6, train=0.35, motorcycle=0.9, bicycle=0.8,
                    person=3.0, pole=4.0, light=2.0, sign=2.0, tree=3.0, static=0.6,
                    wall=0.6, fence=0.6)
_SYNTHIA_COUNTS = dict(car=5.0, truck=0.0, bus=0.7, train=0.0, motorcycle=1.2, bicycle=1.2,
                       person=7.0, pole=5.0, light=2.2, sign=2.0, tree=3.0, static=0.4,
                       wall=0.6, fence=0.6)
_CITYSCAPES_COUNTS = dict(car=6.0, truck=0.5, bus=0.5, train=0.35, motorcycle=0.7, bicycle=2.0,
                          person=5.0, pole=6.0, light=1.8, sign=2.6, tree=4.0, static=0.6,
                          wall=0.8, fence=0.8)

# Objects stand between these depths (metres, log-uniform: as many near as far). Thin things
# are drawn thicker than their real size (THIN x: poles, light housings, signs, bicycle
# frames) so that at the training resolution each covers pixels, not a fraction of one.
OBJECT_DEPTH = (4.0, 35.0)
VEHICLE_NEAR = 7.0
PERSON_WIDTH = 1.4
THIN = 2.0


def _blend(a, b, t: float):
    """Linear blend of two looks / colour tables / texture tables (t=0: a, t=1: b)."""
    if isinstance(a, dict):
        return {k: _blend(a[k], b[k], t) if k in a else b[k] for k in b}
    if isinstance(a, list):  # colour choices: blend choice j of b with choice j of a
        return [tuple(float(x) + t * (float(y) - float(x)) for x, y in zip(a[j % len(a)], c))
                for j, c in enumerate(b)]
    return tuple(np.add(a, t * np.subtract(b, a))) if isinstance(a, tuple) else a + t * (b - a)


def make_domain(name: str, gap: float = 1.0) -> Domain:
    """The domain ``"gta5"``, ``"synthia"`` or ``"cityscapes"`` (target look blended by ``gap``)."""
    if name == "gta5":
        return Domain("gta5", (0.42, 0.52), (1.3, 1.9), 0.75, (4.0, 9.0), _GTA5_COUNTS,
                      _GAME_COLOURS, _GAME_TEXTURE, _GAME_LOOK, overcast=0.3)
    if name == "synthia":
        return Domain("synthia", (0.12, 0.32), (4.0, 9.0), 0.6, (5.0, 12.0), _SYNTHIA_COUNTS,
                      _SYNTHIA_COLOURS, _GAME_TEXTURE, _SYNTHIA_LOOK, ground_code=SIDEWALK, overcast=0.2,
                      codes=CODE_TO_SYNTHIA)
    if name == "cityscapes":
        texture = {k: _blend(_GAME_TEXTURE.get(k, _GAME_TEXTURE["default"]), v, gap)
                   for k, v in _REAL_TEXTURE.items()}
        return Domain("cityscapes", (0.36, 0.46), (1.2, 1.5), 1.0, (3.5, 7.0), _CITYSCAPES_COUNTS,
                      _blend(_GAME_COLOURS, _REAL_COLOURS, gap), texture,
                      _blend(_GAME_LOOK, _REAL_LOOK, gap), ego_hood=0.07)
    raise ValueError(f"unknown domain {name!r}: expected gta5, synthia or cityscapes")


# ------------------------------------------------------------------------------------------
# Drawing: a pinhole camera and a canvas that draws image and label with the same geometry
# ------------------------------------------------------------------------------------------

class _Camera:
    """Pinhole camera at height ``h`` looking along +Z; world X right, Y up, Z forward (metres)."""

    def __init__(self, f, cx, horizon, h):
        self.f, self.cx, self.horizon, self.h = f, cx, horizon, h

    def __call__(self, x, y, z):
        z = max(z, 0.5)
        return (self.cx + self.f * x / z, self.horizon + self.f * (self.h - y) / z)

    def scale(self, z):
        """Pixels per metre at depth z."""
        return self.f / max(z, 0.5)


class _Canvas:
    """Image (RGB), label codes, shadow mask and (for SYNTHIA) instance ids, drawn together."""

    def __init__(self, w, h, instances):
        self.rgb = Image.new("RGB", (w, h))
        self.label = Image.new("L", (w, h), UNLABELED)
        self.shade = Image.new("L", (w, h), 0)
        self.inst = Image.new("L", (w, h), 0) if instances else None
        self._draw = [ImageDraw.Draw(self.rgb), ImageDraw.Draw(self.label), ImageDraw.Draw(self.shade)]
        self._inst = ImageDraw.Draw(self.inst) if instances else None
        self.instance = 0

    def new_instance(self):
        self.instance = self.instance % 255 + 1

    def _fills(self, code, colour):
        return (tuple(int(round(c)) for c in colour), code, 0)

    def polygon(self, pts, code, colour, thing=False):
        for draw, fill in zip(self._draw, self._fills(code, colour)):
            draw.polygon(pts, fill=fill)
        if self._inst is not None:
            self._inst.polygon(pts, fill=self.instance if thing else 0)

    def ellipse(self, box, code, colour, thing=False):
        box = _box(box)
        for draw, fill in zip(self._draw, self._fills(code, colour)):
            draw.ellipse(box, fill=fill)
        if self._inst is not None:
            self._inst.ellipse(box, fill=self.instance if thing else 0)

    def line(self, pts, width, code, colour, thing=False):
        width = max(1, int(round(width)))
        for draw, fill in zip(self._draw, self._fills(code, colour)):
            draw.line(pts, fill=fill, width=width)
        if self._inst is not None:
            self._inst.line(pts, fill=self.instance if thing else 0, width=width)

    def ring(self, box, width, code, colour, thing=False):
        box, width = _box(box), max(1, int(round(width)))
        for draw, fill in zip(self._draw, self._fills(code, colour)):
            draw.ellipse(box, outline=fill, width=width)
        if self._inst is not None:
            self._inst.ellipse(box, outline=self.instance if thing else 0, width=width)

    def detail(self, pts, colour, ellipse=False):
        """Paint the image only (windows, lamps): the label keeps the class underneath."""
        fill = tuple(int(round(c)) for c in colour)
        if ellipse:
            self._draw[0].ellipse(_box(pts), fill=fill)
        else:
            self._draw[0].polygon(pts, fill=fill)

    def shadow(self, pts):
        self._draw[2].polygon(pts, fill=255)


def _box(box):
    x0, y0, x1, y1 = box
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


class _Painter:
    """Draws the parts of a street scene into a canvas for one domain."""

    def __init__(self, domain: Domain, cam: _Camera, canvas: _Canvas, rng):
        self.d, self.cam, self.c, self.rng = domain, cam, canvas, rng

    def colour(self, part, shade=1.0):
        choices = self.d.colours[part]
        base = np.asarray(choices[self.rng.integers(len(choices))], dtype=np.float64)
        base = base * self.rng.uniform(0.85, 1.15) + self.rng.normal(0, self.d.look["jitter"], 3)
        return tuple(np.clip(base * shade, 0, 255))

    def quad(self, corners, code, colour, thing=False):
        self.c.polygon([self.cam(*p) for p in corners], code, colour, thing)

    def box(self, x0, x1, y0, y1, z0, z1, code, colour, thing=True):
        """A box [x0,x1]x[y0,y1]x[z0,z1]: visible side, top and back faces, far faces first."""
        if x1 < 0:    # left of the camera: its right side faces us
            self.quad([(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)], code,
                      np.multiply(colour, 0.75), thing)
        elif x0 > 0:  # right of the camera: its left side faces us
            self.quad([(x0, y0, z0), (x0, y1, z0), (x0, y1, z1), (x0, y0, z1)], code,
                      np.multiply(colour, 0.75), thing)
        if y1 < self.cam.h:
            self.quad([(x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1)], code,
                      np.multiply(colour, 1.1), thing)
        self.quad([(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0)], code, colour, thing)

    def sprite(self, x, z):
        """Local drawing frame of an upright object standing at (x, z): metres -> pixels."""
        u0, v0 = self.cam(x, 0.0, z)
        s = self.cam.scale(z)
        return lambda dx, dy: (u0 + dx * s, v0 - dy * s), s

    # --- the parts -------------------------------------------------------------------------
    def car(self, x, z):
        self.c.new_instance()
        col = self.colour("car")
        w, length = self.rng.uniform(1.7, 2.0), self.rng.uniform(4.0, 4.8)
        self.box(x - w / 2, x + w / 2, 0.25, 0.95, z, z + length, CAR, col)
        self.box(x - w / 2 + 0.15, x + w / 2 - 0.15, 0.95, 1.5, z + 0.6, z + length - 1.2, CAR, col)
        p, s = self.sprite(x, z)
        glass = self.colour("glass")
        self.c.detail([self.cam(x - w / 2 + 0.25, 1.0, z + 0.6), self.cam(x + w / 2 - 0.25, 1.0, z + 0.6),
                       self.cam(x + w / 2 - 0.3, 1.42, z + 0.6), self.cam(x - w / 2 + 0.3, 1.42, z + 0.6)], glass)
        for side in (-1, 1):  # wheels belong to the car; tail lights are details
            cx = x + side * (w / 2 - 0.3)
            self.c.polygon([self.cam(cx - 0.25, 0.0, z), self.cam(cx + 0.25, 0.0, z),
                            self.cam(cx + 0.25, 0.3, z), self.cam(cx - 0.25, 0.3, z)], CAR,
                           self.colour("tyre"), thing=True)
            self.c.detail([self.cam(x + side * (w / 2 - 0.05), 0.7, z), self.cam(x + side * (w / 2 - 0.35), 0.7, z),
                           self.cam(x + side * (w / 2 - 0.35), 0.85, z), self.cam(x + side * (w / 2 - 0.05), 0.85, z)],
                          (200, 30, 30))

    def truck(self, x, z):
        self.c.new_instance()
        w, length = 2.5, self.rng.uniform(7.0, 10.0)
        self.box(x - w / 2 + 0.1, x + w / 2 - 0.1, 0.4, 2.8, z + length - 0.2, z + length + 2.2, TRUCK,
                 self.colour("truck"))
        self.box(x - w / 2, x + w / 2, 0.5, self.rng.uniform(3.2, 3.9), z, z + length, TRUCK, self.colour("truck"))
        for side in (-1, 1):
            cx = x + side * (w / 2 - 0.4)
            self.c.polygon([self.cam(cx - 0.3, 0.0, z + 0.5), self.cam(cx + 0.3, 0.0, z + 0.5),
                            self.cam(cx + 0.3, 0.55, z + 0.5), self.cam(cx - 0.3, 0.55, z + 0.5)], TRUCK,
                           self.colour("tyre"), thing=True)

    def bus(self, x, z):
        self.c.new_instance()
        w, length, h = 2.55, self.rng.uniform(11.0, 13.0), 3.1
        col = self.colour("bus")
        self.box(x - w / 2, x + w / 2, 0.3, h, z, z + length, BUS, col)
        side = x - w / 2 if x > 0 else x + w / 2
        glass = self.colour("glass")
        for k in range(int(length // 2.2)):  # a row of side windows
            z0 = z + 0.6 + 2.2 * k
            self.c.detail([self.cam(side, 1.6, z0), self.cam(side, 2.7, z0),
                           self.cam(side, 2.7, z0 + 1.8), self.cam(side, 1.6, z0 + 1.8)], glass)
        self.c.detail([self.cam(x - w / 2 + 0.2, 1.7, z), self.cam(x + w / 2 - 0.2, 1.7, z),
                       self.cam(x + w / 2 - 0.2, 2.8, z), self.cam(x - w / 2 + 0.2, 2.8, z)], glass)

    def train(self, x, z):
        """A tram on rails (Cityscapes' 'train' is mostly trams)."""
        w, length = 2.4, self.rng.uniform(20.0, 30.0)
        for side in (-0.72, 0.72):  # rails: 'rail track' is an ignored class
            self.quad([(x + side - 0.05, 0, z - 30), (x + side + 0.05, 0, z - 30),
                       (x + side + 0.05, 0, 300), (x + side - 0.05, 0, 300)], RAIL, self.colour("rail"))
        self.c.new_instance()
        self.box(x - w / 2, x + w / 2, 0.3, 3.4, z, z + length, TRAIN, self.colour("train"))
        glass = self.colour("glass")
        self.c.detail([self.cam(x - w / 2 + 0.2, 1.5, z), self.cam(x + w / 2 - 0.2, 1.5, z),
                       self.cam(x + w / 2 - 0.2, 2.9, z), self.cam(x - w / 2 + 0.2, 2.9, z)], glass)
        self.c.line([self.cam(x, 3.4, z + 2), self.cam(x, 5.5, z + 3)], 2, POLE, self.colour("pole"))

    def person(self, x, z, code=PERSON, on_bike=False):
        self.c.new_instance()
        sprite, s = self.sprite(x, z)
        p = lambda dx, dy: sprite(PERSON_WIDTH * dx, dy)  # people drawn a little wider than real (THIN)
        h = self.rng.uniform(1.6, 1.9)
        body, legs, skin = self.colour("clothes"), self.colour("clothes"), self.colour("skin")
        base = 0.75 if on_bike else 0.0
        leg_top = base + (0.2 if on_bike else 0.47 * h)
        if not on_bike:
            step = self.rng.uniform(-0.18, 0.18)
            for dx in (-0.1, 0.1):
                self.c.polygon([p(dx - 0.07 + step * np.sign(dx), 0), p(dx + 0.07 + step * np.sign(dx), 0),
                                p(dx + 0.08, leg_top), p(dx - 0.08, leg_top)], code, legs, thing=True)
        else:
            self.c.polygon([p(-0.1, base - 0.35), p(0.1, base - 0.35), p(0.12, leg_top), p(-0.12, leg_top)],
                           code, legs, thing=True)
        top = leg_top + 0.33 * h
        self.c.polygon([p(-0.2, leg_top), p(0.2, leg_top), p(0.22, top), p(-0.22, top)], code, body, thing=True)
        for dx in (-0.27, 0.27):
            self.c.polygon([p(dx - 0.05, top), p(dx + 0.05, top), p(dx * 1.1 + 0.05, top - 0.3 * h),
                            p(dx * 1.1 - 0.05, top - 0.3 * h)], code, body, thing=True)
        r = 0.11 * h / 1.75
        self.c.ellipse((*p(-r, top + 2 * r + 0.03), *p(r, top + 0.03)), code, skin, thing=True)

    def two_wheeler(self, x, z, code, rider):
        """A bicycle or motorcycle seen from the side, optionally ridden (rider drawn on top)."""
        self.c.new_instance()
        p, s = self.sprite(x, z)
        motor = code == MOTORCYCLE
        col = self.colour("motorcycle" if motor else "bicycle")
        r = 0.32 if motor else 0.34
        sign = 1 if self.rng.random() < 0.5 else -1
        for dx in (-0.65, 0.65):
            box = (*p(dx - r, 2 * r), *p(dx + r, 0))
            if motor:
                self.c.ellipse(box, code, self.colour("tyre"), thing=True)
            else:  # the label covers the whole wheel, as Cityscapes' bicycle polygons do
                self.c.ellipse(box, code, np.multiply(col, 0.6), thing=True)
                self.c.ring(box, THIN * 0.07 * s, code, col, thing=True)
        if motor:
            self.c.polygon([p(-0.55, r), p(0.5, r), p(0.45 * sign, 0.95), p(-0.4 * sign, 0.85)],
                           code, col, thing=True)
        else:
            self.c.line([p(-0.65, r), p(-0.1, 0.85), p(0.45 * sign, 0.95), p(0.65, r)],
                        max(1, THIN * 0.06 * s), code, col, thing=True)
            self.c.line([p(-0.1, 0.85), p(0.0, r), p(0.5 * sign, 0.95)], max(1, THIN * 0.06 * s), code, col,
                        thing=True)
        if rider:
            self.person(x, z, RIDER, on_bike=True)

    def pole(self, x, z, height):
        p, s = self.sprite(x, z)
        w = THIN * 0.14
        self.c.polygon([p(-w, 0), p(w, 0), p(w * 0.8, height), p(-w * 0.8, height)], POLE, self.colour("pole"))
        return p

    def traffic_light(self, x, z, over_road):
        height = self.rng.uniform(3.2, 5.0)
        p = self.pole(x, z, height + (0.6 if over_road else 0.0))
        cx = 0.0
        if over_road:  # an arm reaching over the road
            reach = -np.sign(x) * self.rng.uniform(2.5, 4.5)
            self.c.polygon([p(0, height + 0.5), p(reach, height + 0.5), p(reach, height + 0.65), p(0, height + 0.65)],
                           POLE, self.colour("pole"))
            cx = reach
        self.c.new_instance()
        hw, hh = THIN * 0.2, THIN * 1.0  # housing half-width and height
        box = [p(cx - hw, height - hh), p(cx + hw, height - hh), p(cx + hw, height), p(cx - hw, height)]
        self.c.polygon(box, LIGHT, self.colour("light"))
        lit = self.rng.integers(3)
        for k, lamp in enumerate([(230, 40, 30), (240, 200, 40), (40, 220, 90)]):
            col = lamp if k == lit else np.multiply(lamp, 0.3)
            y, r = height - hh * (0.2 + 0.3 * k), hw * 0.55
            self.c.detail((*p(cx - r, y + r), *p(cx + r, y - r)), col, ellipse=True)

    def traffic_sign(self, x, z):
        height = self.rng.uniform(2.2, 3.2)
        p = self.pole(x, z, height)
        col = self.colour("sign")
        r = THIN * 0.38
        kind = self.rng.integers(3)
        if kind == 0:
            self.c.ellipse((*p(-r, height + r), *p(r, height - r)), SIGN, col)
            self.c.detail((*p(-0.6 * r, height + 0.6 * r), *p(0.6 * r, height - 0.6 * r)), (235, 235, 235), ellipse=True)
        elif kind == 1:
            self.c.polygon([p(-r, height - r), p(r, height - r), p(0, height + r)], SIGN, col)
            self.c.detail([p(-0.5 * r, height - 0.6 * r), p(0.5 * r, height - 0.6 * r), p(0, height + 0.4 * r)],
                          (235, 235, 235))
        else:
            self.c.polygon([p(-r, height - r), p(r, height - r), p(r, height + r), p(-r, height + r)], SIGN, col)
            self.c.detail([p(-0.3 * r, height - 0.8 * r), p(0.3 * r, height - 0.8 * r),
                           p(0.3 * r, height + 0.5 * r), p(-0.3 * r, height + 0.5 * r)], (235, 235, 235))

    def tree(self, x, z):
        p, s = self.sprite(x, z)
        trunk_h = self.rng.uniform(1.8, 3.5)
        # Trunks are 'vegetation' in Cityscapes' annotation rules.
        self.c.polygon([p(-0.18, 0), p(0.18, 0), p(0.14, trunk_h + 0.5), p(-0.14, trunk_h + 0.5)],
                       VEGETATION, np.multiply(self.colour("vegetation"), 0.5) + (30, 15, 0))
        crown = self.rng.uniform(1.5, 3.2)
        for _ in range(3):
            dx, dy = self.rng.normal(0, crown * 0.3), trunk_h + crown + self.rng.normal(0, crown * 0.25)
            r = crown * self.rng.uniform(0.6, 1.0)
            self.c.ellipse((*p(dx - r, dy + r), *p(dx + r, dy - r)), VEGETATION, self.colour("vegetation"))

    def static_object(self, x, z):
        """Benches, bins, billboards: 'static' is an ignored class in Cityscapes and GTA5."""
        w, h = self.rng.uniform(0.5, 2.0), self.rng.uniform(0.6, 2.5)
        self.box(x - w / 2, x + w / 2, 0.0, h, z, z + 0.6, STATIC, self.colour("static"), thing=False)


# ------------------------------------------------------------------------------------------
# One scene
# ------------------------------------------------------------------------------------------

def render_scene(domain: Domain, size, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one street scene. Returns (image uint8 (H, W, 3) RGB, codes uint8 (H, W), instances uint8 (H, W)).

    ``codes`` holds trainIds 0..18 plus the extra codes EGO, STATIC, LANE, RAIL, UNLABELED,
    which ``domain.codes`` turns into the dataset's raw ids.
    """
    w, h = size
    horizon = h * rng.uniform(*domain.horizon)
    cam = _Camera(domain.focal * w * rng.uniform(0.95, 1.05), w * rng.uniform(0.45, 0.55),
                  horizon, rng.uniform(*domain.camera_height))
    canvas = _Canvas(w, h, instances=domain.name == "synthia")
    paint = _Painter(domain, cam, canvas, rng)
    rates = domain.counts

    # Sky: a vertical gradient, greyer on overcast days (the sources' weather varies too).
    top, bottom = np.asarray(paint.colour("sky_top")), np.asarray(paint.colour("sky_bottom"))
    overcast = rng.random() < domain.overcast
    if overcast:
        top, bottom = top + 0.6 * (top.mean() - top), bottom + 0.6 * (bottom.mean() - bottom)
    for v in range(int(math.ceil(horizon)) + 1):
        t = v / max(horizon, 1.0)
        canvas.line([(0, v), (w, v)], 1, SKY, top + t * (bottom - top))

    # Ground: terrain (or SYNTHIA's sidewalk) everywhere, then sidewalks and road on top.
    road_c = rng.uniform(-3.0, 3.0)
    half = rng.uniform(*domain.road_half_width)
    left, right = road_c - half, road_c + half
    walk_l, walk_r = rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0)
    z_far = 400.0
    ground_part = "terrain" if domain.ground_code == TERRAIN else "sidewalk"
    canvas.polygon([(0, horizon), (w, horizon), (w, h), (0, h)], domain.ground_code, paint.colour(ground_part))
    for x0, x1 in ((left - walk_l, left), (right, right + walk_r)):
        paint.quad([(x0, 0, 0.5), (x1, 0, 0.5), (x1, 0, z_far), (x0, 0, z_far)], SIDEWALK, paint.colour("sidewalk"))
        if domain.ground_code == TERRAIN and rng.random() < 0.6:  # a grass verge along a stretch of it
            z0 = rng.uniform(0.5, 20.0)
            xv = x0 if x0 < left else x1
            wv = -np.sign(xv - road_c) * min(rng.uniform(0.8, 2.0), x1 - x0 - 0.3)
            paint.quad([(xv, 0, z0), (xv + wv, 0, z0), (xv + wv, 0, z0 + rng.uniform(15, 60)),
                        (xv, 0, z0 + rng.uniform(15, 60))], TERRAIN, paint.colour("terrain"))
    paint.quad([(left, 0, 0.5), (right, 0, 0.5), (right, 0, z_far), (left, 0, z_far)], ROAD, paint.colour("road"))
    lane_col = paint.colour("lane")
    for z in np.arange(rng.uniform(2, 8), 120, 9.0):  # dashed centre line
        paint.quad([(road_c - 0.08, 0, z), (road_c + 0.08, 0, z), (road_c + 0.08, 0, z + 3),
                    (road_c - 0.08, 0, z + 3)], LANE, lane_col)

    # Far skyline and tree line at the horizon.
    x = -150.0
    while x < 150.0:
        bw = rng.uniform(8, 30)
        if rng.random() < 0.6:
            paint.quad([(x, 0, 250), (x + bw, 0, 250), (x + bw, rng.uniform(8, 40), 250),
                        (x, rng.uniform(8, 40), 250)], BUILDING, paint.colour("building", 0.9))
        else:
            p, s = paint.sprite(x + bw / 2, 220)
            r = rng.uniform(4, 9)
            canvas.ellipse((*p(-bw / 2, 2 * r), *p(bw / 2, -r)), VEGETATION, paint.colour("vegetation", 0.85))
        x += bw

    # Both sides of the street: blocks of buildings, parks and open ground, far to near.
    sun = rng.choice([-1, 1])
    trees_in_parks = []
    for side, edge in ((-1, left - walk_l), (1, right + walk_r)):
        blocks, z = [], 3.0
        while z < 160:
            length = rng.uniform(10, 35)
            kind = rng.choice(["building", "building", "park", "open"])
            blocks.append((kind, z, z + length))
            z += length + (rng.uniform(0, 6) if kind == "building" else 0)
        for kind, z0, z1 in reversed(blocks):
            if kind == "building":
                setback = rng.uniform(0, 3) if rng.random() < 0.4 else 0.0
                xf, height = edge + side * setback, rng.uniform(8, 30)
                if side == sun:  # the facade casts a shadow across the street
                    reach = height * 0.5
                    canvas.shadow([cam(xf, 0, z0), cam(xf - side * reach, 0, z0),
                                   cam(xf - side * reach, 0, z1), cam(xf, 0, z1)])
                col = paint.colour("building")
                paint.quad([(xf, 0, z0), (xf + side * 20, 0, z0), (xf + side * 20, height, z0), (xf, height, z0)],
                           BUILDING, np.multiply(col, 0.8), thing=False)
                paint.quad([(xf, 0, z0), (xf, height, z0), (xf, height, z1), (xf, 0, z1)], BUILDING, col, thing=False)
                glass = paint.colour("window")
                for y in np.arange(2.5, height - 1.5, 3.2):
                    for zw in np.arange(z0 + 1.0, z1 - 1.5, 3.0):
                        if cam.scale(zw) * 1.2 < 0.8:  # windows below a pixel are not drawn
                            break
                        canvas.detail([cam(xf, y, zw), cam(xf, y + 1.6, zw), cam(xf, y + 1.6, zw + 1.3),
                                       cam(xf, y, zw + 1.3)], glass)
            elif kind == "park":
                for _ in range(rng.poisson(2)):
                    trees_in_parks.append((side * rng.uniform(abs(edge) + 1, abs(edge) + 12), rng.uniform(z0, z1)))
                if rng.random() < 0.5:  # a hedge behind the sidewalk
                    paint.quad([(edge + side * 1.5, 0, z0), (edge + side * 1.5, 1.4, z0),
                                (edge + side * 1.5, 1.4, z1), (edge + side * 1.5, 0, z1)], VEGETATION,
                               paint.colour("vegetation"))
        for kind, z0, z1 in blocks:
            if kind == "building":
                continue
            for part, code, rate in (("wall", WALL, rates["wall"]), ("fence", FENCE, rates["fence"])):
                if rng.random() < rate / 2:
                    wall_h = rng.uniform(1.0, 3.0)
                    col = paint.colour(part)
                    paint.quad([(edge, 0, z0), (edge, wall_h, z0), (edge, wall_h, z1), (edge, 0, z1)], code, col)
                    if code == FENCE:  # a lattice of darker posts
                        for zf in np.arange(z0, z1, 1.5):
                            canvas.detail([cam(edge, 0, zf), cam(edge, wall_h, zf), cam(edge, wall_h, zf + 0.25),
                                           cam(edge, 0, zf + 0.25)], np.multiply(col, 0.55))
                    break

    # Objects, drawn far to near.
    objects = [(z, "tree", x) for x, z in trees_in_parks]

    def depth(near=OBJECT_DEPTH[0]):  # log-uniform: as many near as far objects
        return float(np.exp(rng.uniform(np.log(near), np.log(OBJECT_DEPTH[1]))))

    def curb_x():
        return left - 0.4 if rng.random() < 0.5 else right + 0.4

    def walk_x():
        return rng.uniform(left - walk_l + 0.3, left - 0.3) if rng.random() < 0.5 else \
            rng.uniform(right + 0.3, right + walk_r - 0.3)

    def lane_x(margin=1.2):
        return rng.uniform(left + margin, right - margin)

    for kind, where in (("car", lane_x), ("truck", lane_x), ("bus", lane_x), ("motorcycle", lane_x),
                        ("bicycle", walk_x), ("person", walk_x), ("pole", curb_x), ("light", curb_x),
                        ("sign", curb_x), ("tree", lambda: (left - walk_l + 0.8) if rng.random() < 0.5
                                           else (right + walk_r - 0.8)), ("static", walk_x)):
        for _ in range(rng.poisson(rates[kind])):  # vehicles closer than VEHICLE_NEAR would fill the frame
            objects.append((depth(VEHICLE_NEAR if kind in ("car", "truck", "bus") else OBJECT_DEPTH[0]), kind, where()))
    if rng.random() < rates["train"]:
        objects.append((rng.uniform(8, 40), "train", road_c + rng.uniform(-1.0, 1.0)))
    for z, kind, x in sorted(objects, key=lambda o: -o[0]):
        if kind == "car":
            paint.car(x, z)
        elif kind == "truck":
            paint.truck(x, z)
        elif kind == "bus":
            paint.bus(x, z)
        elif kind == "train":
            paint.train(x, z)
        elif kind == "motorcycle":
            paint.two_wheeler(x, z, MOTORCYCLE, rider=rng.random() < 0.7)
        elif kind == "bicycle":  # half of them ridden on the road's edge, half parked
            ridden = rng.random() < 0.5
            paint.two_wheeler(left + 0.8 if ridden and x < road_c else right - 0.8 if ridden else x, z,
                              BICYCLE, rider=ridden)
        elif kind == "person":
            paint.person(x if rng.random() < 0.85 else lane_x(0.5), z)
        elif kind == "pole":
            paint.pole(x, z, rng.uniform(4.5, 9.0))
        elif kind == "light":
            paint.traffic_light(x, z, over_road=rng.random() < 0.4)
        elif kind == "sign":
            paint.traffic_sign(x, z)
        elif kind == "tree":
            paint.tree(x, z)
        elif kind == "static":
            paint.static_object(x, z)

    if domain.ego_hood > 0:  # the ego vehicle's bonnet, as in Cityscapes' bottom rows
        top_v = h * (1 - domain.ego_hood * rng.uniform(0.8, 1.2))
        canvas.ellipse((-0.3 * w, top_v, 1.3 * w, h + 2 * (h - top_v)), EGO, paint.colour("ego"))

    codes = np.asarray(canvas.label)
    shade = np.zeros_like(codes) if overcast else np.asarray(canvas.shade)
    image = _finish_look(np.asarray(canvas.rgb), codes, shade, domain, rng)
    instances = np.asarray(canvas.inst) if canvas.inst is not None else np.zeros_like(codes)
    return image, codes, instances


def _smooth_noise(rng, h, w, cell):
    """Zero-mean, unit-scale value noise with blobs of about ``cell`` pixels, float32 (h, w)."""
    coarse = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _finish_look(rgb, codes, shade, domain: Domain, rng) -> np.ndarray:
    """Texture, shadows and the camera's look (colour, contrast, blur, noise) -> uint8 (H, W, 3)."""
    look = domain.look
    h, w = codes.shape
    img = rgb.astype(np.float32) / 255.0
    coarse_amp = np.full(256, domain.texture["default"][0], dtype=np.float32)
    fine_amp = np.full(256, domain.texture["default"][1], dtype=np.float32)
    for code, (a, b) in domain.texture.items():
        if code != "default":
            coarse_amp[code], fine_amp[code] = a, b
    texture = (coarse_amp[codes] * _smooth_noise(rng, h, w, 6)
               + fine_amp[codes] * rng.standard_normal((h, w)).astype(np.float32))
    img *= (1.0 + texture)[..., None]
    img *= (1.0 - (1.0 - look["shadow"]) * (shade.astype(np.float32) / 255.0))[..., None]
    img *= look["exposure"] * rng.uniform(0.85, 1.15)
    lum = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = lum[..., None] + look["saturation"] * rng.uniform(0.8, 1.2) * (img - lum[..., None])
    img *= np.asarray(look["white_balance"], dtype=np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    img = np.clip(img, 0.0, 1.0) ** look["gamma"]
    img = 0.5 + look["contrast"] * (img - 0.5)
    if look["vignette"] > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        img *= (1.0 - look["vignette"] * 0.5 * r2)[..., None]
    if look["blur"] > 0:
        img = cv2.GaussianBlur(img, (0, 0), look["blur"] * w / 320.0)
    if look["noise"] > 0:  # shot noise grows with brightness
        img += look["noise"] * np.sqrt(np.clip(img, 0, 1) + 0.05) * rng.standard_normal(img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# Writing the datasets
# ------------------------------------------------------------------------------------------
# Image i of a part is drawn from the stream (seed, code, i): a new part takes a new code, so the
# images of the others stay byte-identical and the new one repeats none of theirs.
_DOMAIN_CODE = {"gta5": 1, "synthia": 2, "cityscapes/train": 3, "cityscapes/val": 4, "cityscapes/dev": 5}
_SPLIT_CITIES = {"train": TRAIN_CITIES, "val": VAL_CITIES, "dev": DEV_CITIES}


def _cityscapes_name(split: str, index: int) -> str:
    """The image path of a Cityscapes-like split's image ``index``, relative to leftImg8bit/<split>/."""
    cities = _SPLIT_CITIES[split]
    city = cities[index % len(cities)]
    return f"{city}/{city}_{index // len(cities):06d}_000019_leftImg8bit.png"


def _write_png(path: Path, encoded: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded)
    return len(encoded)


def _pil_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)  # no text/time chunks: deterministic bytes
    return buf.getvalue()


def _make_one(job) -> int:
    """Render and write image ``index`` of ``part``; returns bytes written."""
    out, part, index, seed, size, gap = job
    domain = make_domain(part.split("/")[0], gap)
    rng = np.random.default_rng([seed, _DOMAIN_CODE[part], index])
    image, codes, instances = render_scene(domain, size, rng)
    raw = domain.codes[codes]
    written = 0
    if part == "gta5":
        name = f"{index + 1:05d}.png"
        written += _write_png(out / "gta5" / "images" / name, _pil_png(Image.fromarray(image)))
        label = Image.fromarray(raw.astype(np.uint8))
        label.putpalette(_GTA5_PALETTE.tobytes())
        written += _write_png(out / "gta5" / "labels" / name, _pil_png(label))
    elif part == "synthia":
        if np.isin(codes, [TERRAIN, TRUCK, TRAIN]).any():
            raise RuntimeError("the SYNTHIA-like domain drew a class SYNTHIA does not have")
        name = f"{index:07d}.png"
        written += _write_png(out / "synthia" / "RGB" / name, _pil_png(Image.fromarray(image)))
        # 16-bit, 3 channels; OpenCV writes BGR, so the class id goes to index 2 (stored red).
        bgr = np.stack([np.zeros_like(raw), instances.astype(np.uint16), raw], axis=-1).astype(np.uint16)
        ok, buf = cv2.imencode(".png", bgr)
        if not ok:
            raise RuntimeError("OpenCV could not encode a SYNTHIA label")
        written += _write_png(out / "synthia" / "GT" / "LABELS" / name, buf.tobytes())
    else:
        split = part.split("/")[1]
        name = _cityscapes_name(split, index)
        root = out / "cityscapes"
        written += _write_png(root / "leftImg8bit" / split / name, _pil_png(Image.fromarray(image)))
        label_name = name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        written += _write_png(root / "gtFine" / split / label_name, _pil_png(Image.fromarray(raw.astype(np.uint8))))
    return written


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the processes already fill the cores


def _jobs(out: Path, seed: int, cfg: SyntheticConfig) -> list:
    parts = [("gta5", cfg.gta5_count, cfg.gta5_size), ("synthia", cfg.synthia_count, cfg.synthia_size),
             ("cityscapes/train", cfg.cityscapes_train_count, cfg.cityscapes_size),
             ("cityscapes/val", cfg.cityscapes_val_count, cfg.cityscapes_size),
             ("cityscapes/dev", cfg.cityscapes_dev_count, cfg.cityscapes_size)]
    return [(out, part, i, seed, size, cfg.gap) for part, n, size in parts for i in range(n)]


def _marker(seed: int, cfg: SyntheticConfig, complete: bool) -> str:
    cfg_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    return json.dumps({"generator": "cosuda.synthetic", "version": GENERATOR_VERSION, "seed": seed,
                       "config": cfg_dict, "complete": complete}, indent=2, sort_keys=True) + "\n"


def _clear(out: Path) -> None:
    """Remove a previous generation, refusing to touch folders this module did not write."""
    ours = [out / d for d in ("gta5", "synthia", "cityscapes")]
    if not (out / MARKER).is_file() and any(p.exists() and any(p.iterdir()) for p in ours):
        raise FileExistsError(
            f"{out} already holds gta5/, synthia/ or cityscapes/ folders not written by "
            f"cosuda.synthetic (no {MARKER}); choose another --out or delete them first")
    for p in ours:
        if p.exists():
            shutil.rmtree(p)


def generate(out=DEFAULT_ROOT, seed: int = 0, config: SyntheticConfig | None = None,
             workers: int | None = None, progress: bool = True) -> dict:
    """Write the three datasets under ``out`` (a previous generation there is replaced).

    Returns a summary dict: root, seed, counts (images per part: gta5, synthia, cityscapes_train,
    cityscapes_val, cityscapes_dev), bytes written, seconds, config.
    ``workers`` processes render in parallel (default: up to 4, the CPU count); the files do
    not depend on it.
    """
    from cosuda.progress import tqdm

    cfg = config or SyntheticConfig()
    out = Path(out)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    (out / MARKER).write_text(_marker(seed, cfg, complete=False))
    jobs = _jobs(out, int(seed), cfg)
    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    total = 0
    bar = tqdm(total=len(jobs), desc=f"synthetic benchmark -> {out}", unit="img", disable=not progress)
    if workers == 1 or len(jobs) < 8:
        for job in jobs:
            total += _make_one(job)
            bar.update()
    else:
        # spawn, not fork: a forked OpenCV/torch runtime can deadlock in the children.
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for written in pool.imap_unordered(_make_one, jobs, chunksize=4):
                total += written
                bar.update()
    bar.close()
    # List files in the reference code bases' format, one relative image path per line.
    _write_list(out / "gta5" / "train.txt", [f"{i + 1:05d}.png" for i in range(cfg.gta5_count)])
    _write_list(out / "synthia" / "train.txt", [f"{i:07d}.png" for i in range(cfg.synthia_count)])
    for split, n in (("train", cfg.cityscapes_train_count), ("val", cfg.cityscapes_val_count),
                     ("dev", cfg.cityscapes_dev_count)):
        _write_list(out / "cityscapes" / f"{split}.txt", [_cityscapes_name(split, i) for i in range(n)])
    (out / MARKER).write_text(_marker(seed, cfg, complete=True))
    return {
        "root": str(out), "seed": int(seed),
        "counts": {"gta5": cfg.gta5_count, "synthia": cfg.synthia_count,
                   "cityscapes_train": cfg.cityscapes_train_count, "cityscapes_val": cfg.cityscapes_val_count,
                   "cityscapes_dev": cfg.cityscapes_dev_count},
        "bytes": total, "seconds": time.perf_counter() - start, "config": dataclasses.asdict(cfg),
    }


def _write_list(path: Path, names: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(n + "\n" for n in names))


def is_complete(out, seed: int | None = None, config: SyntheticConfig | None = None) -> bool:
    """Whether ``out`` holds a complete benchmark of this generator version -- of any seed and
    config, or of exactly ``seed`` (and ``config``, default sizes when None) if a seed is given."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        return False
    if seed is not None:
        return marker.read_text() == _marker(int(seed), config or SyntheticConfig(), complete=True)
    saved = json.loads(marker.read_text())
    return bool(saved.get("complete")) and saved.get("version") == GENERATOR_VERSION


def interrupted(out) -> bool:
    """Whether ``out`` holds a benchmark this module started and did not finish: its marker says
    ``"complete": false`` (generation was stopped) or cannot be read. False without a marker
    (real data, or a folder this module never wrote), and for a finished benchmark of any version."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("complete") is not True
    except (OSError, ValueError, AttributeError):  # a marker cut short while being written
        return True


def recorded(out) -> tuple[int, SyntheticConfig]:
    """(seed, SyntheticConfig) that the marker under ``out`` records; a count it does not name takes
    its default (a marker from before the dev split: 100 dev images). (0, the defaults) where the
    marker is missing or cannot be read."""
    try:
        saved = json.loads((Path(out) / MARKER).read_text())
        return int(saved["seed"]), SyntheticConfig(**saved["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0, SyntheticConfig()


def predates_dev(out) -> bool:
    """Whether ``out`` holds a finished benchmark written before the dev split existed: its marker
    records no ``cityscapes_dev_count`` (and there is no cityscapes/leftImg8bit/dev/). False for
    anything else, a benchmark generated with ``--cityscapes-dev 0`` included."""
    try:
        saved = json.loads((Path(out) / MARKER).read_text())
        finished, config = saved.get("complete") is True, saved["config"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    dev_folder = Path(out) / "cityscapes" / "leftImg8bit" / "dev"
    return finished and "cityscapes_dev_count" not in config and not dev_folder.is_dir()


def regenerate_command(out) -> str:
    """The command that writes the benchmark under ``out`` again with the seed, counts and sizes its
    marker records (the defaults where the marker cannot be read)."""
    seed, cfg = recorded(out)
    default = SyntheticConfig()
    options = {"--gta5": "gta5_count", "--synthia": "synthia_count", "--cityscapes-train": "cityscapes_train_count",
               "--cityscapes-val": "cityscapes_val_count", "--cityscapes-dev": "cityscapes_dev_count",
               "--gta5-size": "gta5_size", "--synthia-size": "synthia_size", "--cityscapes-size": "cityscapes_size",
               "--gap": "gap"}
    args = [f"python -m cosuda.synthetic --out {out}"] + ([f"--seed {seed}"] if seed else [])
    for option, field in options.items():
        value = getattr(cfg, field)
        if value != getattr(default, field):
            args.append(f"{option} {'x'.join(map(str, value)) if isinstance(value, tuple) else value}")
    return " ".join(args)


def ensure(out=DEFAULT_ROOT, seed: int = 0, config: SyntheticConfig | None = None,
           progress: bool = True) -> Path:
    """Generate the benchmark under ``out`` unless a complete one with the same seed, config and
    generator version is already there (one written before the dev split is not: its marker lacks
    the dev count). Returns ``out`` as a Path."""
    out = Path(out)
    if not is_complete(out, seed, config):
        generate(out, seed, config or SyntheticConfig(), progress=progress)
    return out


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------

def _parse_size(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x180 (WxH), got {text!r}") from None
    return (w, h)


def main(argv=None) -> int:
    d = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog=prog("cosuda.synthetic"),
        description="Write the synthetic GTA5/SYNTHIA/Cityscapes-like benchmark in the real "
                    "download layouts. Same seed -> byte-identical files. An existing output "
                    "written by this command is regenerated (overwritten).")
    parser.add_argument("--out", type=Path, default=DEFAULT_ROOT, help=f"output folder (default: {DEFAULT_ROOT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gta5", type=int, default=d.gta5_count, help="GTA5-like images")
    parser.add_argument("--synthia", type=int, default=d.synthia_count, help="SYNTHIA-like images")
    parser.add_argument("--cityscapes-train", type=int, default=d.cityscapes_train_count)
    parser.add_argument("--cityscapes-val", type=int, default=d.cityscapes_val_count,
                        help="Cityscapes-like val images (the reporting split)")
    parser.add_argument("--cityscapes-dev", type=int, default=d.cityscapes_dev_count,
                        help="Cityscapes-like dev images (labelled, for choosing hyper-parameters; "
                             "disjoint from train and val)")
    parser.add_argument("--gta5-size", type=_parse_size, default=d.gta5_size, metavar="WxH")
    parser.add_argument("--synthia-size", type=_parse_size, default=d.synthia_size, metavar="WxH")
    parser.add_argument("--cityscapes-size", type=_parse_size, default=d.cityscapes_size, metavar="WxH")
    parser.add_argument("--gap", type=float, default=d.gap, help="target appearance gap, 0..1")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: up to 4)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        cfg = SyntheticConfig(gta5_count=args.gta5, synthia_count=args.synthia,
                              cityscapes_train_count=args.cityscapes_train, cityscapes_val_count=args.cityscapes_val,
                              cityscapes_dev_count=args.cityscapes_dev, gta5_size=args.gta5_size,
                              synthia_size=args.synthia_size, cityscapes_size=args.cityscapes_size, gap=args.gap)
        summary = generate(args.out, args.seed, cfg, workers=args.workers, progress=not args.no_progress)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    c = summary["counts"]
    print(f"wrote {c['gta5']} GTA5-like, {c['synthia']} SYNTHIA-like, {c['cityscapes_train']} + "
          f"{c['cityscapes_val']} + {c['cityscapes_dev']} Cityscapes-like (train + val + dev) images to "
          f"{summary['root']}: "
          f"{summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s (seed {summary['seed']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
