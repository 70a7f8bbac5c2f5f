"""Decoding real DICOM (pydicom, pydicom-data) and NIfTI (nibabel) files, and the decoded-image cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfm.decode import DecodeError, DecodeOptions, decode, nifti_slices, read_nifti
from medfm.image_cache import FileImages

pydicom = pytest.importorskip("pydicom")
from pydicom.pixels import apply_modality_lut  # noqa: E402
from test_datasets_plugins import dicom_file  # noqa: E402

NIBABEL_DATA = Path(pytest.importorskip("nibabel").__file__).parent / "tests" / "data"


shipped = dicom_file


def test_ct_16bit_scaled_by_its_window_not_truncated():
    path = shipped("CT_small.dcm")
    ds = pydicom.dcmread(path)
    out = decode(path)
    assert out.shape == (128, 128) and out.dtype == np.uint8
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    assert hu.max() > 255  # really 16-bit data
    expected = np.clip(np.round((hu - hu.min()) * 255 / (hu.max() - hu.min())), 0, 255)  # no window in the file
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_mr_window_from_file_and_explicit_window():
    path = shipped("MR_small.dcm")
    ds = pydicom.dcmread(path)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    values = apply_modality_lut(ds.pixel_array, ds)
    auto = decode(path)
    assert (auto[values <= center - 0.5 - (width - 1) / 2] == 0).all()
    assert (auto[values > center - 0.5 + (width - 1) / 2] == 255).all()
    assert not np.array_equal(auto, decode(path, DecodeOptions(window="minmax")))
    forced = decode(path, DecodeOptions(window=(500.0, 200.0)))
    assert (forced[values >= 600] == 255).all() and (forced[values <= 400] == 0).all()


def test_monochrome1_is_inverted():
    path = shipped("RG1_UNCI.dcm")  # computed radiography chest, MONOCHROME1 (pydicom-data)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    raw = ds.pixel_array
    out = decode(path)
    # in MONOCHROME1 low stored values are white: the darkest stored pixel must come out bright
    assert out.flat[np.argmin(raw)] > out.flat[np.argmax(raw)]
    assert out.mean() > 128  # a chest film: mostly bright once displayed correctly


def test_voi_lut_sequence_applied(tmp_path):
    path = shipped("vlut_04.dcm")  # has a VOI LUT Sequence (pydicom-data)
    ds = pydicom.dcmread(path)
    item = ds.VOILUTSequence[0]
    out = decode(path)
    lut = np.asarray(item.LUTData)
    expected = np.round(lut[ds.pixel_array] * 255.0 / lut.max())
    assert np.abs(out.astype(int) - expected).max() <= 1
    item.LUTData = [int(v) for v in lut[::-1]]  # the same file with the LUT reversed
    ds.save_as(tmp_path / "reversed.dcm")
    assert np.abs(decode(tmp_path / "reversed.dcm").astype(int) - (255 - out.astype(int))).max() <= 1
    # window = "minmax" ignores the LUT
    assert np.array_equal(
        decode(tmp_path / "reversed.dcm", DecodeOptions(window="minmax")), decode(path, DecodeOptions(window="minmax"))
    )


@pytest.mark.parametrize(
    "compressed,reference",
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE lossless
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),  # JPEG lossless process 14, RGB (pydicom-data)
        ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # JPEG 2000 lossless, MONOCHROME1 CR (pydicom-data)
    ],
)
def test_compressed_transfer_syntaxes_decode_like_uncompressed(compressed, reference):
    assert np.array_equal(decode(shipped(compressed)), decode(shipped(reference)))


def test_lossy_jpeg_and_colour_dicom():
    lossy = decode(shipped("JPGExtended.dcm"))  # 12-bit JPEG extended (libjpeg)
    assert lossy.shape == (1024, 256)
    rgb = decode(shipped("SC_rgb_jpeg_dcmtk.dcm"))  # YBR JPEG baseline -> RGB
    assert rgb.shape == (100, 100, 3)
    assert rgb[5, 50, 0] > 200 and rgb[5, 50, 1] < 50  # the top band of this test image is red


def test_multiframe_middle_or_chosen_frame():
    path = shipped("emri_small.dcm")  # 10 frames
    frames = pydicom.dcmread(path).pixel_array
    middle, first = decode(path), decode(path, DecodeOptions(frame=0))
    assert middle.shape == (64, 64)
    assert np.corrcoef(middle.ravel(), frames[5].ravel())[0, 1] > 0.99
    assert np.corrcoef(first.ravel(), frames[0].ravel())[0, 1] > 0.99
    with pytest.raises(DecodeError, match="frame 12"):
        decode(path, DecodeOptions(frame=12))


def test_nifti_as_slices():
    path = NIBABEL_DATA / "anatomical.nii"  # 33 x 41 x 25, int16 big-endian
    volume = read_nifti(path)
    assert volume.shape == (33, 41, 25)
    axial = nifti_slices(path)
    assert len(axial) == 25 and axial[0].shape == (41, 33) and axial[0].dtype == np.uint8
    assert len(nifti_slices(path, DecodeOptions(slice_axis=0))) == 33
    assert np.array_equal(decode(path), axial[12])
    four_d = nifti_slices(NIBABEL_DATA / "example4d.nii.gz")  # 4D: the first volume
    assert len(four_d) == 24 and four_d[0].shape == (96, 128)


def test_png_16bit_tiff_and_palette(tmp_path):
    wide = np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 20
    Image.fromarray(wide).save(tmp_path / "a.png")
    out = decode(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / "b.tiff")
    assert decode(tmp_path / "b.tiff").shape == (8, 8, 3)
    Image.fromarray(np.zeros((8, 8), np.uint8)).convert("P").save(tmp_path / "c.png")
    assert decode(tmp_path / "c.png").shape == (8, 8, 3)


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DecodeError, match="broken.png"):
        decode(bad)
    with pytest.raises(DecodeError, match="JPEG-lossy.dcm.*transfer syntax"):
        decode(shipped("JPEG-lossy.dcm"))  # a known-undecodable JPEG in pydicom's test files
    with pytest.raises(DecodeError, match="does not exist"):
        decode(tmp_path / "nope.dcm")


def test_cache_decodes_each_file_once_and_follows_changes(tmp_path):
    calls = []

    def counting(path, options):
        calls.append(path.name)
        return decode(path, options)

    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((900, 600), 40 * i, np.uint8)).save(files[-1])
    images = FileImages(files, cache_dir=tmp_path / "cache", max_side=256, decoder=counting)
    first = [images[i] for i in range(3)]
    assert first[0].shape == (384, 256)  # shorter side shrunk to max_side, aspect kept
    again = FileImages(files, cache_dir=tmp_path / "cache", max_side=256, decoder=counting)
    assert all(np.array_equal(a, again[i]) for i, a in enumerate(first))
    assert calls == ["0.png", "1.png", "2.png"]  # the second pass read the cache
    Image.fromarray(np.full((900, 600), 99, np.uint8)).save(files[1])
    os.utime(files[1], ns=(1, 1))
    assert again[1].max() == 99 and calls[-1] == "1.png"  # a changed file is decoded again
    other = FileImages(files, cache_dir=tmp_path / "cache", max_side=128, decoder=counting)
    assert other[0].shape == (192, 128)  # another size is another entry
    entry = again.entry(2)
    entry.write_bytes(b"torn")
    assert again[2].shape == (384, 256) and calls[-1] == "2.png"  # a torn entry is replaced
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and not p.name.endswith(".npy")]
    assert leftovers == []  # atomic writes leave no temporary files


def test_cache_works_in_dataloader_workers(tmp_path):
    import torch

    from medfm.extract import PreprocessedImages
    from medfm.preprocessing import Preprocessing

    files = [tmp_path / f"{i}.jpg" for i in range(4)]
    for i, f in enumerate(files):
        Image.fromarray(np.full((40, 30, 3), 50 * i, np.uint8)).save(f)
    images = FileImages(files, cache_dir=tmp_path / "cache")
    loader = torch.utils.data.DataLoader(
        PreprocessedImages(images, Preprocessing(size=32)), batch_size=2, num_workers=2
    )
    batches = list(loader)
    assert [tuple(b.shape) for b in batches] == [(2, 3, 32, 32)] * 2
    assert all(images.is_cached(i) for i in range(4))
