"""Hashes of an image for finding copies: the file's content hash and a perceptual (DCT) hash of its pixels.

The content hash (sha256 of the bytes) finds exact copies. The perceptual hash finds
copies that were re-encoded, resized or mirrored: the image, made grey and resized to
64 x 64, is taken to the frequency domain by a 2-D DCT; the 16 x 16 lowest frequencies
(the image's layout, which re-encoding and resizing barely move) each give one bit, set
when the coefficient is above their median. Two images are near copies when their
hashes differ in few of the 256 bits (`leakage.NEAR_BITS`). The common 64-bit hash (8 x 8
of 32 x 32) was tried first: it could not tell apart the demo set's shapes of different
classes (hundreds of false pairs among its 1300 images), which 256 bits do.

A left-right mirror of an image changes the sign of its coefficients of odd horizontal
frequency and nothing else, so the mirror's hash is computed from the same
coefficients, at no extra cost, and a copy is matched against both.

An image without structure (one flat colour, or nearly) has no perceptual hash: its
bits would be noise, and every flat image would match every other. Such images are
matched by content only.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Tuple

import numpy as np
from PIL import Image

SIDE = 64  # the grey image the DCT is taken of
LOW = 16  # the LOW x LOW lowest frequencies give the 256 bits
DRAFT = 32  # a JPEG is decoded at the smallest DCT scale (down to 1/8) that keeps both sides at least this
FLAT = 2.0  # an image whose largest non-DC low coefficient is below this (grey levels) has no structure to hash


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: row u holds the cosine of frequency u."""
    k = np.arange(n)
    matrix = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(SIDE)[:LOW]  # only the low rows are needed
_MIRROR = np.where(np.arange(LOW) % 2, -1.0, 1.0)[None, :]  # a left-right flip negates odd horizontal frequencies


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def perceptual_hash(image: Image.Image) -> Optional[Tuple[str, str]]:
    """(hash, hash of the left-right mirror) as 64 hex digits each; None for an image without structure."""
    grey = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.float64)
    low = _DCT @ grey @ _DCT.T
    if np.abs(low.ravel()[1:]).max() < FLAT:
        return None
    return _bits(low), _bits(low * _MIRROR)


def _bits(low: np.ndarray) -> str:
    values = low.ravel()
    bits = values > np.median(values)
    return np.packbits(bits).tobytes().hex()
