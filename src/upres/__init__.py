"""upres: deep-learning image super-resolution.

Public API::

    up = upres.load("x4")            # shipped name, "bicubic"/"lanczos", or a weights path
    out = up.upscale(img, tile=512)  # numpy / PIL / path in, same kind and dtype out
    big = upres.upscale_image(img, outscale=1.5)  # any size: also size=(w, h), fit=(w, h)
    lr = upres.imresize(hr, 1 / 4)   # MATLAB-compatible bicubic
    upres.upscale_file(up, "scan.dcm", "scan_x4.dcm")  # a file of any supported kind
    upres.upscale_video(up, "film.mp4", "film_x4.mp4")  # with its sound, resumable
"""

from upres.api import load, upscale_image
from upres.convert import upscale_file
from upres.errors import UpresError
from upres.inference.upscaler import Interpolator, Upscaler
from upres.models.descriptor import ModelCard
from upres.resize import imresize
from upres.video import upscale_video

__version__ = "0.1.0"

__all__ = ["Interpolator", "ModelCard", "UpresError", "Upscaler", "__version__", "imresize",
           "load", "upscale_file", "upscale_image", "upscale_video"]
