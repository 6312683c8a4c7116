"""Synthetic demo data in the competition layout: cartoon faces, NOT a benchmark.

`write_demo_dataset` draws simple faces with numpy and Pillow so that every command (check,
EDA, train, inference, ensembles) can be tried end to end without the real photos. The labels
are carried by deliberately visible cues:

    mask     mask1..mask5 = one of five mask shapes over nose and mouth; incorrect_mask = the
             mask pulled below the nose or down onto the chin; normal = no mask
    gender   hair length (long for most women, short for most men), brow thickness, beard, lips
    age      hair greyness and forehead wrinkles grow with an apparent age (true age + noise)

Two scene kinds: "wide" (the default) draws 384x512 upper-body scenes in the competition's
proportions, the face 15-45 % of the frame width at a random place in front of a random wall,
door, gradient or clutter, so the face crop has to find it; "tight" draws the face filling a
square photo. Each split's faces.csv gives the drawn face box of every photo, for measuring
the detector.

Scores on this data say the code runs and learns, nothing about the real task. The layout
quirks of the real data are reproduced on purpose: mixed .jpg/.jpeg/.png per person, macOS
dot-files beside some photos, ages capped at 60, label-free random eval file names.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import MaskclsError
from ..labels import AGE_CAP, GENDER_NAMES, PHOTO_MASK, age_group, encode

PHOTO_NAMES = tuple(PHOTO_MASK)  # mask1..mask5, incorrect_mask, normal
MIN_PERSONS = 6  # one person per gender x age-group cell
MAX_PERSONS = 999_999  # ids are 6 digits
MIN_IMAGE_SIZE = 32

# Roughly the real competition's balance: more women, few people of 60 and over.
FEMALE_SHARE = 0.58
AGE_GROUP_SHARES = (0.45, 0.42, 0.13)
EXTENSIONS = (".jpg", ".jpeg", ".png")
EXTENSION_SHARES = (0.8, 0.1, 0.1)
DOT_FILE_SHARE = 0.25

# Drawing on a canvas twice the output size and shrinking it gives smooth edges cheaply.
SUPERSAMPLE = 2
YOUNGEST_AGE = 18  # the competition's photos are of adults
SKIN_JITTER = 18  # per-channel spread of skin tones within a race, in 0-255 units
MAX_TILT_DEGREES = 7
TILT_MARGIN = 1.13  # > cos(7 deg) + sin(7 deg): a window tilted that much stays on the canvas
BACKGROUND_GRID = 16
SCENES = ("wide", "tight")
DEFAULT_IMAGE_SIZE = {"wide": 384, "tight": 96}  # wide: the frame's width; its height is 4/3 of it
WIDE_ASPECT = 4 / 3
FACE_WIDTH_SHARES = (0.15, 0.45)  # of the frame's width
BACKGROUND_KINDS = ("wall", "door", "gradient", "clutter")

RACE_SKIN = {
    "Asian": (226, 190, 160),
    "White": (240, 208, 186),
    "Black": (145, 100, 74),
}
RACE_SHARES = {"Asian": 0.9, "White": 0.05, "Black": 0.05}
YOUNG_HAIR = ((28, 24, 24), (52, 36, 28), (88, 60, 40))
GREY_HAIR = np.array((212, 212, 208))

# Mask shape -> colours it comes in; each person wears the five shapes in a random slot order.
MASK_COLOURS = {
    "surgical": ((150, 195, 232), (236, 238, 240), (160, 214, 192), (238, 184, 200)),
    "cloth": ((34, 34, 40), (42, 52, 96), (112, 112, 118), (200, 180, 150)),
    "kf94": ((240, 240, 240), (40, 40, 44), (150, 150, 156)),
    "cup": ((245, 242, 225), (210, 220, 230)),
    "patterned": ((220, 60, 60), (60, 140, 70), (230, 170, 40), (120, 70, 160)),
}
MASK_SHAPES = tuple(MASK_COLOURS)

# Vertical extent of the mask in face half-heights from the face centre, per way of wearing it.
MASK_SPAN = {"worn": (-0.04, 0.98), "below_nose": (0.36, 1.14), "on_chin": (0.68, 1.30)}


@dataclass(frozen=True)
class Look:
    """Everything about a person's appearance that stays the same across their seven photos."""

    skin: tuple
    hair: tuple
    hair_style: str  # "long", "medium" or "short"
    hairline: float  # face half-heights above the centre
    beard: bool
    brow_width: float  # fraction of the face half-height
    lips: tuple
    wrinkles: int  # forehead lines, 0..3
    clothes: tuple
    background: tuple  # two colours of a gradient
    background_angle: float
    background_kind: str  # wide scenes: wall, door, gradient or clutter (the same place in all 7 photos)
    masks: tuple  # (shape, colour) for mask1..mask5
    incorrect_mask: tuple  # (shape, colour)
    incorrect_way: str  # "below_nose" or "on_chin"


@dataclass(frozen=True)
class Person:
    id: str
    gender: str
    race: str
    true_age: int
    look: Look
    extension: str
    dot_files: bool
    jpeg_quality: int

    @property
    def age(self) -> int:
        return min(self.true_age, AGE_CAP)

    @property
    def folder(self) -> str:
        return f"{self.id}_{self.gender}_{self.race}_{self.age}"


def write_demo_dataset(
    out: str | Path, persons: int = 150, eval_persons: int = 60, image_size: int | None = None, seed: int = 0, scene: str = "wide"
) -> Path:
    """Write a synthetic train/ and eval/ in the competition layout under `out`; return `Path(out)`.

    eval/ also gets truth.csv (the true labels, in info.csv's order) and meta.csv (the person id
    of each eval image); each split gets faces.csv (the drawn face box of each photo).
    `image_size` is the side of a tight photo or the width of a wide one. Byte-identical output
    for the same arguments.
    """
    if scene not in SCENES:
        raise MaskclsError(f"scene={scene!r}: choose one of {', '.join(SCENES)}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[scene]
    if persons < MIN_PERSONS or eval_persons < MIN_PERSONS:
        raise MaskclsError(
            f"persons={persons}, eval_persons={eval_persons}: each needs at least {MIN_PERSONS} "
            "(one person per gender x age group)"
        )
    if persons + eval_persons > MAX_PERSONS:
        raise MaskclsError(f"persons + eval_persons = {persons + eval_persons}: ids have 6 digits, use at most {MAX_PERSONS}")
    if image_size < MIN_IMAGE_SIZE:
        raise MaskclsError(f"image_size={image_size}: faces need at least {MIN_IMAGE_SIZE} px")
    out = Path(out)
    for part in ("train", "eval"):
        # Writing over an earlier dataset would leave its extra photos mixed in with the new ones.
        if (out / part).exists():
            raise MaskclsError(f"{out / part}: already exists; write the demo data to a new folder or delete that one")
    rng = np.random.default_rng(seed)
    # Sparse ids from a wider range, like the real data's 000001..006959 with gaps.
    id_limit = min(max(10_000, 2 * (persons + eval_persons)), MAX_PERSONS + 1)
    ids = rng.choice(np.arange(1, id_limit), size=persons + eval_persons, replace=False)
    train_ids = sorted(ids[:persons])  # train.csv is sorted by id, as in the real data
    train_people = _sample_people(train_ids, rng, with_file_quirks=True)
    eval_people = _sample_people(ids[persons:], rng, with_file_quirks=False)
    draw = _wide_photo if scene == "wide" else _draw_photo
    _write_train(out / "train", train_people, lambda look, photo: draw(look, photo, image_size, rng))
    _write_eval(out / "eval", eval_people, lambda look, photo: draw(look, photo, image_size, rng), rng)
    return out


def _sample_people(ids, rng: np.random.Generator, with_file_quirks: bool) -> list[Person]:
    count = len(ids)
    cells = [(gender, group) for gender in (0, 1) for group in (0, 1, 2)]  # every class occurs
    if count >= 30:
        cells += [(0, 2), (1, 2)]  # 60+ is rare; make sure each gender has at least two
    rest = count - len(cells)
    cells += zip(rng.choice(2, size=rest, p=(1 - FEMALE_SHARE, FEMALE_SHARE)), rng.choice(3, size=rest, p=AGE_GROUP_SHARES), strict=True)
    cells = [cells[i] for i in rng.permutation(count)]
    extensions = _with_each_present(rng.choice(len(EXTENSIONS), size=count, p=EXTENSION_SHARES), len(EXTENSIONS))
    dot_files = rng.random(count) < DOT_FILE_SHARE
    dot_files[0] = True  # a reader must meet at least one
    people = []
    for number, (person_id, (gender, group)) in enumerate(zip(ids, cells, strict=True)):
        race = str(rng.choice(list(RACE_SHARES), p=list(RACE_SHARES.values())))
        true_age = _sample_age(int(group), rng)
        people.append(
            Person(
                id=f"{int(person_id):06d}",
                gender=GENDER_NAMES[gender],
                race=race,
                true_age=true_age,
                look=_sample_look(int(gender), race, true_age, rng),
                extension=EXTENSIONS[extensions[number]] if with_file_quirks else ".jpg",
                dot_files=bool(dot_files[number]) and with_file_quirks,
                jpeg_quality=int(rng.integers(85, 96)),
            )
        )
    return people


def _with_each_present(choices: np.ndarray, options: int) -> np.ndarray:
    """Overwrite the first few entries with any option that was never drawn, so all occur."""
    choices = choices.copy()
    missing = [option for option in range(options) if option not in choices]
    for slot, option in enumerate(missing):
        choices[slot] = option
    return choices


def _sample_age(group: int, rng: np.random.Generator) -> int:
    """True age; like the real data, many people at 18-22 and in their fifties."""
    if group == 0:
        ages = np.arange(YOUNGEST_AGE, 30)
        weights = np.linspace(2.0, 1.0, len(ages))
    elif group == 1:
        ages = np.arange(30, 60)
        weights = np.linspace(1.0, 2.5, len(ages))
    else:
        ages = np.arange(60, 71)
        weights = np.ones(len(ages))
    return int(rng.choice(ages, p=weights / weights.sum()))


def _sample_look(gender: int, race: str, true_age: int, rng: np.random.Generator) -> Look:
    female = gender == 1
    # People look older or younger than they are, which blurs the age-group boundaries.
    apparent_age = true_age + rng.normal(0.0, 2.5)
    if apparent_age < 30:
        greyness = rng.uniform(0.0, 0.08)
        wrinkles = 0
    elif apparent_age < 60:
        greyness = 0.15 + 0.4 * (apparent_age - 30) / 30
        wrinkles = 1 if apparent_age < 45 else 2
    else:
        greyness = min(1.0, 0.85 + 0.15 * (apparent_age - 60) / 10)
        wrinkles = 3
    young_hair = np.array(YOUNG_HAIR[rng.integers(len(YOUNG_HAIR))])
    hair = tuple(int(c) for c in young_hair + greyness * (GREY_HAIR - young_hair))
    # Hair length is the main gender cue, but some women wear it short and some men long.
    if female:
        hair_style = "long" if rng.random() < 0.85 else "medium"
    else:
        hair_style = "short" if rng.random() < 0.9 else "medium"
    skin = np.array(RACE_SKIN[race]) + rng.integers(-SKIN_JITTER, SKIN_JITTER + 1, size=3)
    lips = (196, 70, 90) if female and rng.random() < 0.7 else tuple(int(c) for c in skin * (0.78, 0.6, 0.6))
    shape_order = rng.permutation(len(MASK_SHAPES))
    masks = tuple(_mask_of(MASK_SHAPES[i], rng) for i in shape_order)
    return Look(
        skin=tuple(int(c) for c in np.clip(skin, 0, 255)),
        hair=hair,
        hair_style=hair_style,
        hairline=rng.uniform(0.5, 0.62),
        beard=not female and rng.random() < 0.35,
        brow_width=rng.uniform(0.025, 0.035) if female else rng.uniform(0.045, 0.06),
        lips=lips,
        wrinkles=wrinkles,
        clothes=tuple(int(c) for c in rng.integers(20, 236, size=3)),
        background=tuple(tuple(int(c) for c in rng.integers(40, 236, size=3)) for _ in range(2)),
        background_angle=rng.uniform(0, 2 * math.pi),
        background_kind=BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))],
        masks=masks,
        incorrect_mask=_mask_of(MASK_SHAPES[rng.integers(len(MASK_SHAPES))], rng),
        incorrect_way="below_nose" if rng.random() < 0.5 else "on_chin",
    )


def _mask_of(shape: str, rng: np.random.Generator) -> tuple:
    colours = MASK_COLOURS[shape]
    return shape, colours[rng.integers(len(colours))]


def _write_train(train_dir: Path, people: list[Person], draw) -> None:
    images_dir = train_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(
        train_dir / "train.csv",
        ["id", "gender", "race", "age", "path"],
        [(p.id, p.gender, p.race, p.age, p.folder) for p in people],
    )
    boxes = []
    for person in people:
        folder = images_dir / person.folder
        folder.mkdir(exist_ok=True)
        for photo in PHOTO_NAMES:
            image, box = draw(person.look, photo)
            _save(image, folder / f"{photo}{person.extension}", person.jpeg_quality)
            boxes.append((f"{person.folder}/{photo}{person.extension}", *box, PHOTO_MASK[photo]))
        if person.dot_files:
            _write_dot_files(folder, person.extension)
    _write_csv(train_dir / "faces.csv", FACES_HEADER, boxes)


def _write_dot_files(folder: Path, extension: str) -> None:
    """Copying photos off a Mac leaves AppleDouble '._' twins and .DS_Store; readers must skip them."""
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(16)
    (folder / f"._mask1{extension}").write_bytes(apple_double)
    (folder / f"._normal{extension}").write_bytes(apple_double)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(24))


def _write_eval(eval_dir: Path, people: list[Person], draw, rng: np.random.Generator) -> None:
    images_dir = eval_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    photos = [(person, photo) for person in people for photo in PHOTO_NAMES]
    photos = [photos[i] for i in rng.permutation(len(photos))]
    image_ids, truths, boxes = [], [], []
    for person, photo in photos:
        image_id = rng.bytes(20).hex() + ".jpg"  # random, so the name gives nothing away
        image, box = draw(person.look, photo)
        _save(image, images_dir / image_id, person.jpeg_quality)
        image_ids.append(image_id)
        truths.append(encode(PHOTO_MASK[photo], GENDER_NAMES.index(person.gender), age_group(person.age)))
        boxes.append((image_id, *box, PHOTO_MASK[photo]))
    _write_csv(eval_dir / "faces.csv", FACES_HEADER, boxes)
    _write_csv(eval_dir / "info.csv", ["ImageID", "ans"], [(i, 0) for i in image_ids])
    _write_csv(eval_dir / "truth.csv", ["ImageID", "ans"], list(zip(image_ids, truths, strict=True)))
    _write_csv(eval_dir / "meta.csv", ["ImageID", "id"], [(i, person.id) for i, (person, _) in zip(image_ids, photos, strict=True)])


FACES_HEADER = ["path", "x0", "y0", "x1", "y1", "mask_state"]


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _save(image: Image.Image, path: Path, jpeg_quality: int) -> None:
    if path.suffix == ".png":
        image.save(path, format="PNG")
    else:
        image.save(path, format="JPEG", quality=jpeg_quality)


def _draw_photo(look: Look, photo: str, image_size: int, rng: np.random.Generator) -> Image.Image:
    """One photo: the person's face at a jittered position, scale, tilt and lighting."""
    window = image_size * SUPERSAMPLE
    # The canvas is larger than the output window so that a tilted window never leaves it.
    canvas = math.ceil(window * TILT_MARGIN)
    image = _background(look, canvas, rng)
    draw = ImageDraw.Draw(image)
    scale = rng.uniform(0.9, 1.1)
    cx = canvas / 2 + window * rng.uniform(-0.05, 0.05)
    cy = canvas / 2 + window * rng.uniform(-0.07, 0.01)
    rw, rh = window * 0.24 * scale, window * 0.32 * scale
    _draw_head(draw, look, cx, cy, rw, rh)
    mask_state = PHOTO_MASK[photo]
    if mask_state == 0:
        shape, colour = look.masks[PHOTO_NAMES.index(photo)]
        _draw_mask(draw, shape, colour, "worn", cx, cy, rw, rh)
    elif mask_state == 1:
        shape, colour = look.incorrect_mask
        _draw_mask(draw, shape, colour, look.incorrect_way, cx, cy, rw, rh)
    # One affine pass tilts and shrinks: bilinear sampling at stride 2 averages 2x2 canvas pixels.
    tilt = math.radians(rng.uniform(-MAX_TILT_DEGREES, MAX_TILT_DEGREES))
    cos, sin = SUPERSAMPLE * math.cos(tilt), SUPERSAMPLE * math.sin(tilt)
    half, centre = image_size / 2, canvas / 2
    affine = (cos, -sin, centre - (cos - sin) * half, sin, cos, centre - (sin + cos) * half)
    small = image.transform((image_size, image_size), Image.AFFINE, affine, resample=Image.BILINEAR)
    # The face's box before the tilt, in output pixels: close enough for measuring a detector.
    fx, fy = (cx - centre) / SUPERSAMPLE + half, (cy - centre) / SUPERSAMPLE + half
    fw, fh = rw / SUPERSAMPLE, rh / SUPERSAMPLE
    return _relight(small, rng), _rounded_box(fx - fw, fy - fh, fx + fw, fy + fh)


def _rounded_box(*box) -> tuple:
    return tuple(round(float(v), 1) for v in box)


def _wide_photo(look: Look, photo: str, width: int, rng: np.random.Generator) -> tuple[Image.Image, tuple]:
    """An upper-body scene: a wall, door, gradient or clutter behind a torso and the face at a
    random scale and place; then a camera's blur, lighting and noise."""
    height = round(width * WIDE_ASPECT)
    big_w, big_h = width * SUPERSAMPLE, height * SUPERSAMPLE
    image = _scene_background(look, big_w, big_h, rng)
    draw = ImageDraw.Draw(image)
    rw = big_w * rng.uniform(*FACE_WIDTH_SHARES) / 2
    rh = rw * 4 / 3
    cx = rng.uniform(min(1.4 * rw, big_w / 2), max(big_w - 1.4 * rw, big_w / 2))
    cy = rng.uniform(min(1.3 * rh, big_h * 0.3), max(big_h * 0.62 - rh, big_h * 0.3))
    draw.rounded_rectangle((cx - 2.1 * rw, cy + 1.6 * rh, cx + 2.1 * rw, big_h + rh), radius=rw, fill=look.clothes)  # shoulders and torso
    _draw_head(draw, look, cx, cy, rw, rh)
    mask_state = PHOTO_MASK[photo]
    if mask_state == 0:
        _draw_mask(draw, *look.masks[PHOTO_NAMES.index(photo)], "worn", cx, cy, rw, rh)
    elif mask_state == 1:
        _draw_mask(draw, *look.incorrect_mask, look.incorrect_way, cx, cy, rw, rh)
    small = image.resize((width, height), Image.BOX)
    if rng.random() < 0.4:  # a camera slightly out of focus
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    box = _rounded_box(*(v / SUPERSAMPLE for v in (cx - rw, cy - rh, cx + rw, cy + rh)))
    return _relight(small, rng), box


def _scene_background(look: Look, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """The person's place (the same kind and colours in all their photos), with per-photo jitter."""
    square = _background(look, max(width, height), rng).crop((0, 0, width, height))
    if look.background_kind == "gradient":
        return square
    wall, trim = (tuple(int(c) for c in np.clip(np.array(colour) + rng.integers(-8, 9, 3), 0, 255)) for colour in look.background)
    image = Image.new("RGB", (width, height), wall) if look.background_kind != "clutter" else square
    draw = ImageDraw.Draw(image)
    if look.background_kind == "door":
        left = width * rng.uniform(0.05, 0.55)
        door = (left, height * rng.uniform(0.02, 0.12), left + width * rng.uniform(0.3, 0.45), height)
        draw.rectangle(door, fill=trim, outline=_shade(trim, 0.6), width=max(2, width // 60))
        knob_y = door[1] + (door[3] - door[1]) * 0.55
        draw.ellipse((door[2] - width * 0.06, knob_y, door[2] - width * 0.03, knob_y + width * 0.03), fill=(200, 180, 90))
    elif look.background_kind == "clutter":
        for _ in range(int(rng.integers(6, 16))):
            colour = tuple(int(c) for c in rng.integers(20, 236, 3))
            x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
            x1, y1 = x0 + rng.uniform(0.05, 0.4) * width, y0 + rng.uniform(0.05, 0.4) * height
            shape = rng.integers(3)
            if shape == 0:
                draw.rectangle((x0, y0, x1, y1), fill=colour)
            elif shape == 1:
                draw.ellipse((x0, y0, x1, y1), fill=colour)
            else:
                draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, max(3, width // 40))))
    else:  # wall: plaster with a skirting line
        y = height * rng.uniform(0.75, 0.95)
        draw.rectangle((0, y, width, height), fill=trim)
    return image


def _background(look: Look, canvas: int, rng: np.random.Generator) -> Image.Image:
    """A two-colour gradient, the same wall for all of a person's photos up to a small turn.

    Computed on a coarse grid and enlarged: a linear gradient survives bilinear enlarging.
    """
    angle = look.background_angle + rng.uniform(-0.2, 0.2)
    ramp = np.linspace(-0.5, 0.5, BACKGROUND_GRID, dtype=np.float32)
    along = np.clip(ramp[None, :] * math.cos(angle) + ramp[:, None] * math.sin(angle) + 0.5, 0, 1)
    start, end = (np.array(c, dtype=np.float32) for c in look.background)
    pixels = start + along[..., None] * (end - start)
    return Image.fromarray(pixels.astype(np.uint8), "RGB").resize((canvas, canvas), Image.BILINEAR)


def _shade(colour: tuple, factor: float) -> tuple:
    return tuple(int(min(255, c * factor)) for c in colour)


def _draw_head(draw: ImageDraw.ImageDraw, look: Look, cx: float, cy: float, rw: float, rh: float) -> None:
    line = max(1, round(rh * 0.03))
    draw.ellipse((cx - 2.0 * rw, cy + 0.85 * rh, cx + 2.0 * rw, cy + 2.8 * rh), fill=look.clothes)
    draw.rectangle((cx - 0.45 * rw, cy + 0.5 * rh, cx + 0.45 * rw, cy + 1.15 * rh), fill=_shade(look.skin, 0.88))
    for side in (-1, 1):
        ear_x = cx + side * rw
        draw.ellipse((ear_x - 0.14 * rw, cy - 0.22 * rh, ear_x + 0.14 * rw, cy + 0.12 * rh), fill=_shade(look.skin, 0.93))
    # Long and medium hair fall behind the face, over ears and shoulders.
    if look.hair_style == "long":
        draw.rounded_rectangle((cx - 1.32 * rw, cy - 1.15 * rh, cx + 1.32 * rw, cy + 1.5 * rh), radius=rw, fill=look.hair)
    elif look.hair_style == "medium":
        draw.rounded_rectangle((cx - 1.2 * rw, cy - 1.12 * rh, cx + 1.2 * rw, cy + 0.7 * rh), radius=0.8 * rw, fill=look.hair)
    # Shading: a darker rim and lit centre give the face the relief that face detectors look for.
    draw.ellipse((cx - rw, cy - rh, cx + rw, cy + rh), fill=_shade(look.skin, 0.8))
    draw.ellipse((cx - 0.9 * rw, cy - 0.94 * rh, cx + 0.9 * rw, cy + 0.9 * rh), fill=_shade(look.skin, 0.92))
    draw.ellipse((cx - 0.72 * rw, cy - 0.8 * rh, cx + 0.72 * rw, cy + 0.75 * rh), fill=look.skin)
    # The top half of an ellipse centred on the hairline makes the hair cap.
    hairline = cy - look.hairline * rh
    cap_height = 1.15 * rh - look.hairline * rh
    draw.pieslice((cx - 1.07 * rw, hairline - cap_height, cx + 1.07 * rw, hairline + cap_height), 180, 360, fill=look.hair)
    if look.beard:
        draw.chord((cx - rw, cy - rh, cx + rw, cy + rh), 20, 160, fill=look.hair)
    wrinkle_colour = _shade(look.skin, 0.62)
    brow_y = cy - 0.3 * rh
    for k in range(look.wrinkles):
        y = brow_y - (0.09 + 0.07 * k) * rh
        draw.arc((cx - 0.5 * rw, y, cx + 0.5 * rw, y + 0.5 * rh), 205, 335, fill=wrinkle_colour, width=line)
    brow_width = max(1, round(look.brow_width * rh))
    eye_y = cy - 0.15 * rh
    for side in (-1, 1):
        draw.line((cx + side * 0.14 * rw, brow_y, cx + side * 0.6 * rw, brow_y - 0.03 * rh), fill=look.hair, width=brow_width)
        eye_x = cx + side * 0.37 * rw
        # Eye sockets sit in shadow under the brow.
        draw.ellipse((eye_x - 0.24 * rw, eye_y - 0.14 * rh, eye_x + 0.24 * rw, eye_y + 0.12 * rh), fill=_shade(look.skin, 0.78))
        draw.ellipse((eye_x - 0.15 * rw, eye_y - 0.07 * rh, eye_x + 0.15 * rw, eye_y + 0.07 * rh), fill=(245, 245, 245))
        draw.ellipse((eye_x - 0.06 * rw, eye_y - 0.06 * rw, eye_x + 0.06 * rw, eye_y + 0.06 * rw), fill=(30, 24, 20))
        if look.wrinkles == 3:  # crow's feet, visible above any mask
            corner = eye_x + side * 0.2 * rw
            for dy in (-0.05, 0.05):
                draw.line((corner, eye_y, corner + side * 0.14 * rw, eye_y + dy * rh), fill=wrinkle_colour, width=line)
    draw.polygon(  # the nose's shadow side, from the bridge between the eyes down to its tip
        [(cx - 0.05 * rw, cy - 0.22 * rh), (cx - 0.19 * rw, cy + 0.25 * rh), (cx + 0.17 * rw, cy + 0.25 * rh), (cx + 0.02 * rw, cy - 0.22 * rh)],
        fill=_shade(look.skin, 0.72),
    )
    for side in (-1, 1):
        nostril_x = cx + side * 0.08 * rw
        draw.ellipse((nostril_x - 0.05 * rw, cy + 0.2 * rh, nostril_x + 0.05 * rw, cy + 0.27 * rh), fill=(60, 32, 28))
    draw.ellipse((cx - 0.3 * rw, cy + 0.43 * rh, cx + 0.3 * rw, cy + 0.57 * rh), fill=look.lips)
    draw.line((cx - 0.28 * rw, cy + 0.5 * rh, cx + 0.28 * rw, cy + 0.5 * rh), fill=(90, 30, 35), width=line)


def _draw_mask(
    draw: ImageDraw.ImageDraw, shape: str, colour: tuple, way: str, cx: float, cy: float, rw: float, rh: float
) -> None:
    top_offset, bottom_offset = MASK_SPAN[way]
    top, bottom = cy + top_offset * rh, cy + bottom_offset * rh
    left, right = cx - 0.95 * rw, cx + 0.95 * rw
    height = bottom - top
    line = max(1, round(rh * 0.03))
    trim = _shade(colour, 0.72)
    for side, x in ((-1, left), (1, right)):  # ear loops run up to the ears whatever the way
        ear = (cx + side * 0.98 * rw, cy - 0.05 * rh)
        draw.line((x, top + 0.15 * height, *ear), fill=trim, width=line)
        draw.line((x, bottom - 0.2 * height, *ear), fill=trim, width=line)
    box = (left, top, right, bottom)
    if shape == "surgical":
        draw.rounded_rectangle(box, radius=0.15 * height, fill=colour)
        for k in (1, 2, 3):
            y = top + k * height / 4
            draw.line((left + 0.05 * rw, y, right - 0.05 * rw, y), fill=trim, width=line)
    elif shape == "cloth":
        draw.chord((left, top - height, right, bottom), 0, 180, fill=colour)
        draw.rectangle((left, top, right, top + 0.1 * height), fill=colour)
    elif shape == "kf94":
        draw.polygon(
            [(left, top + 0.3 * height), (cx, top), (right, top + 0.3 * height),
             (right, top + 0.7 * height), (cx, bottom), (left, top + 0.7 * height)],
            fill=colour,
        )
        draw.line((cx, top, cx, bottom), fill=trim, width=line)
    elif shape == "cup":
        draw.ellipse(box, fill=colour)
        draw.line((left + 0.1 * rw, top + 0.55 * height, right - 0.1 * rw, top + 0.55 * height), fill=trim, width=2 * line)
    else:  # patterned: coloured cloth with a grid of light dots
        draw.rounded_rectangle(box, radius=0.25 * height, fill=colour)
        dot = 0.06 * rw
        for row in range(1, 4):
            for column in range(1, 6):
                x, y = left + column * (right - left) / 6, top + row * height / 4
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=(240, 240, 230))


def _relight(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Per-photo brightness, contrast, colour cast and sensor noise."""
    pixels = np.asarray(image, dtype=np.float32)
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.85, 1.15) + mean
    pixels = pixels * rng.uniform(0.8, 1.2) + rng.uniform(-12, 12, size=3).astype(np.float32)
    pixels += 3.0 * rng.standard_normal(size=pixels.shape, dtype=np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
