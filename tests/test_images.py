"""Image data functions on tiny arrays and a tiny ImageFolder built here."""
import numpy as np
import pytest
import torch
from PIL import Image

from stages.core.sources import write_idx
from stages.infra.errors import PipelineError
from stages.kinds.images import data as images
from stages.kinds.images import metrics as images_metrics
from stages.kinds.images import predict as images_predict
from stages.kinds.images import prepare as images_prepare
from stages.kinds.images.train import augment as augment_batch
from stages.kinds.images.train import elastic_field


def test_idx_round_trip_and_corrupt_file(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)
    np.testing.assert_array_equal(images_prepare.read_idx(tmp_path / "x.gz"), array)
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(PipelineError, match="bad.gz"):
        images_prepare.read_idx(tmp_path / "bad.gz")


def test_truncated_idx_is_an_error(tmp_path):
    import gzip

    (tmp_path / "short.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2])))
    with pytest.raises(PipelineError, match="truncated"):
        images_prepare.read_idx(tmp_path / "short.gz")


def test_stratified_split_holds_out_each_class_in_proportion():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    keep, held = images_prepare.stratified_split(labels, 0.1, np.random.default_rng(0))
    assert np.bincount(labels[held]).tolist() == [1, 2, 3]
    assert set(keep) | set(held) == set(range(60)) and not set(keep) & set(held)
    again = images_prepare.stratified_split(labels, 0.1, np.random.default_rng(0))
    assert np.array_equal(held, again[1])  # seeded: the same split every run


def test_few_per_class_picks_exactly_n_and_refuses_tiny_classes():
    labels = np.repeat([0, 1], [5, 8])
    picked, rest = images_prepare.few_per_class(labels, 3, np.random.default_rng(1))
    assert np.bincount(labels[picked]).tolist() == [3, 3]
    assert len(rest) == 7 and not set(picked) & set(rest)
    with pytest.raises(PipelineError, match="class 0 has 5"):
        images_prepare.few_per_class(labels, 5, np.random.default_rng(1))


def test_channel_stats_and_to_tensor_normalise_to_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 5, 6, 3), dtype=np.uint8)
    mean, std = images_prepare.channel_stats(rgb)
    np.testing.assert_allclose(mean, (rgb / 255).mean(axis=(0, 1, 2)), atol=1e-4)
    x = images.to_tensor(rgb, mean, std)
    assert x.shape == (7, 3, 5, 6)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-3 and (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.02
    gray = rng.integers(0, 256, size=(4, 8, 8), dtype=np.uint8)
    assert images.to_tensor(gray, *images_prepare.channel_stats(gray)).shape == (4, 1, 8, 8)


def augment(x, seed=0, **overrides):
    settings = dict(flip=False, crop_scale=(1.0, 1.0), rotation=0.0, elastic=0.0, elastic_sigma=4.0, jitter=0.0,
                    mean=[0.5], std=[0.5])
    return augment_batch(x, torch.Generator().manual_seed(seed), **(settings | overrides))


def test_augment_with_everything_off_is_the_identity():
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(augment(x), x, atol=1e-5, rtol=0)


def test_augment_draws_per_image_and_is_seeded():
    x = torch.rand(1, 1, 16, 16).repeat(8, 1, 1, 1) * 2 - 1  # eight copies of one image
    out = augment(x, flip=True, crop_scale=(0.5, 1.0), rotation=15.0)
    assert out.shape == x.shape
    distinct = {tuple(o.flatten().round(decimals=4).tolist()) for o in out}
    assert len(distinct) == 8  # torchvision v2 on a batch would give one draw for all eight
    torch.testing.assert_close(out, augment(x, flip=True, crop_scale=(0.5, 1.0), rotation=15.0))


def test_flip_mirrors_the_image():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1) / 16
    out = augment(x, flip=True, mean=[0.0], std=[1.0])
    flipped = [torch.allclose(o, x[0].flip(-1), atol=1e-5) for o in out]
    same = [torch.allclose(o, x[0], atol=1e-5) for o in out]
    assert all(f or s for f, s in zip(flipped, same)) and 10 < sum(flipped) < 54  # about half flipped


def test_jitter_stays_in_pixel_range():
    x = torch.rand(16, 3, 8, 8)
    out = augment(x, jitter=0.2, mean=[0.0] * 3, std=[1.0] * 3)
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, x)


def test_elastic_field_is_smooth_seeded_and_peaks_at_alpha():
    field = elastic_field(4, 28, 28, alpha=2.0, sigma=4.0, generator=torch.Generator().manual_seed(0))
    assert field.shape == (4, 28, 28, 2)
    pixels = field * torch.tensor([28 / 2, 28 / 2])  # back from grid units to pixels
    assert torch.allclose(pixels.abs().amax(dim=(1, 2, 3)), torch.full((4,), 2.0))
    # smooth: neighbouring pixels move almost together, unlike the raw noise it was blurred from
    assert (pixels[:, 1:] - pixels[:, :-1]).abs().max() < 0.5
    torch.testing.assert_close(field, elastic_field(4, 28, 28, 2.0, 4.0, torch.Generator().manual_seed(0)))


def test_elastic_warp_moves_strokes_but_keeps_their_ink():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0  # a vertical bar, as in a 1
    out = augment(x, elastic=2.0, mean=[0.0], std=[1.0])
    assert not torch.allclose(out, x, atol=1e-3)
    ink = out.sum(dim=(1, 2, 3))
    assert ((ink / x.sum(dim=(1, 2, 3)) - 1).abs() < 0.3).all()  # squeezed or stretched here and there, not lost
    columns = (out.sum(dim=(1, 2)) * torch.arange(28.0)).sum(dim=1) / ink
    assert ((columns - 13.5).abs() < 2.0).all()  # no stroke moves further than elastic's 2 pixels


def write_folder(root, counts: dict[str, int]):
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((10, 14, 3), 40 * i, dtype=np.uint8)).save(root / name / f"{i}.jpg")


def test_image_cache_resizes_labels_skips_other_files_and_refuses_a_broken_image(tmp_path):
    write_folder(tmp_path, {"daisy": 2, "roses": 3})
    (tmp_path / "roses" / "LICENSE.txt").write_text("not an image")
    x, y, classes, skipped = images_prepare.build_image_cache(tmp_path, 8)
    assert x.shape == (5, 8, 8, 3) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 1, 1, 1] and classes == ["daisy", "roses"]
    assert skipped == ["roses/LICENSE.txt"]
    (tmp_path / "roses" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(PipelineError, match=r"roses/broken\.jpg: not a readable image"):
        images_prepare.build_image_cache(tmp_path, 8)


def test_grey_images_stay_one_channel_and_a_test_folder_is_the_test_split(tmp_path):
    from PIL import Image

    for split, count in (("train", 3), ("test", 2)):
        for name in ("shirt", "shoe"):
            (tmp_path / "photos" / split / name).mkdir(parents=True)
            for i in range(count):
                grey = Image.fromarray(np.full((9, 9), 30 * i, dtype=np.uint8), mode="L")
                grey.save(tmp_path / "photos" / split / name / f"{i}.png")
    read = images_prepare.READERS["folder"]
    images, labels, classes, skipped, test = read(tmp_path, type("cfg", (), {"image_size": 8}))
    assert images.shape == (6, 8, 8) and classes == ["shirt", "shoe"] and test[0].shape == (4, 8, 8)
    assert test[1].tolist() == [0, 0, 1, 1]


def test_a_class_without_images_is_an_error(tmp_path):
    write_folder(tmp_path, {"daisy": 2})
    (tmp_path / "tulips").mkdir()
    (tmp_path / "tulips" / "notes.txt").write_text("no image here")
    with pytest.raises(PipelineError, match="tulips"):
        images_prepare.build_image_cache(tmp_path, 8)
    with pytest.raises(PipelineError, match="no class folders"):
        images_prepare.build_image_cache(tmp_path / "missing", 8)


def test_confusion_matrix_precision_recall():
    matrix = images_metrics.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    precision, recall = images_predict.per_class_precision_recall(matrix)
    np.testing.assert_allclose(precision, [1.0, 1 / 3, 0.0])
    np.testing.assert_allclose(recall, [0.5, 1.0, 0.0])


def test_image_grid_labels_every_image_and_keeps_its_own_title():
    from stages.core.figures import image_grid

    fig = image_grid(np.zeros((7, 4, 4), dtype=np.uint8), [str(i) for i in range(7)], ["green"] * 7, ncols=5,
                     title="digits cnn")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == [str(i) for i in range(7)]
    assert ax.get_title() == "digits cnn"  # not the last image's label
    assert ax.get_images()[0].get_array().shape == (2 * (4 + 1), 5 * (4 + 0))  # 2 rows, 5 columns of 4x4 images


def test_image_grid_keeps_colour_images_in_colour():
    from stages.core.figures import image_grid

    rgb = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    fig = image_grid(rgb, ["a", "b", "c"], ["green"] * 3, ncols=3)
    canvas = fig.axes[0].get_images()[0].get_array()
    assert canvas.shape[2] == 3 and (canvas[canvas.shape[0] - 1, 0] == [200, 0, 0]).all()


def test_bundled_digits_are_real_labelled_mnist(tmp_path):
    """The 5,000 offline digits: every class present in MNIST's proportions, 28x28 strokes on black."""
    from stages.core.sources import mnist_5k

    mnist_5k(tmp_path)
    x = images_prepare.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    y = images_prepare.read_idx(tmp_path / "train-labels-idx1-ubyte.gz")
    assert x.shape == (5000, 28, 28) and y.shape == (5000,)
    assert np.bincount(y, minlength=10).min() > 350  # ~500 per class
    assert x[:, 0, :].max() == 0 and x.max() == 255  # empty top row, full-intensity strokes


def test_resize_changes_only_the_size():
    digits = np.zeros((2, 28, 28), dtype=np.uint8)
    digits[1] = 200
    assert images.resize(digits, 28) is digits
    small = images.resize(digits, 14)
    assert small.shape == (2, 14, 14) and small.dtype == np.uint8
    assert small[0].max() == 0 and (small[1] == 200).all()  # flat images stay flat


def test_augment_on_cpu_draws_its_numbers_from_the_cpu_generator_in_a_fixed_order():
    """CPU runs stay bit-identical across versions: the 9 numbers per image, then the elastic noise, nothing else."""
    x = torch.rand(4, 1, 12, 12)
    used = torch.Generator().manual_seed(3)
    augment(x, seed=0, rotation=10.0, elastic=2.0)  # a different seed leaves `used` alone
    augment_batch(x, used, flip=False, crop_scale=(0.85, 1.0), rotation=10.0, elastic=2.0, elastic_sigma=4.0,
                  jitter=0.0, mean=[0.5], std=[0.5])
    expected = torch.Generator().manual_seed(3)
    torch.rand(4, 9, generator=expected)
    torch.rand(4, 2, 12, 12, generator=expected)
    assert torch.equal(torch.rand(5, generator=used), torch.rand(5, generator=expected))


def test_prepare_reads_what_the_format_names_and_refuses_one_class(tmp_path, monkeypatch):
    """The reader is the one preprocess.format declares; a folder of one class, or too few images for the splits,
    is refused in one line."""
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "raw" / "shoes"
    raw.mkdir(parents=True)
    cfg = type("cfg", (), {"format": "uci_digits", "image_size": 8})
    with pytest.raises(PipelineError, match=r"data/raw/shoes: expected one digits\.csv\.gz \(preprocess\.format says "
                                            r"so\), found 0"):
        images_prepare.prepare("shoes", cfg)
    write_folder(raw / "photos", {"boots": 4})
    cfg.format = "folder"
    with pytest.raises(PipelineError, match=r"data/raw/shoes: one class only \(boots\): a classifier needs two or more"):
        images_prepare.prepare("shoes", cfg)
    write_folder(raw / "photos", {"sandals": 2})
    with pytest.raises(PipelineError, match=r"class 'sandals' has 2 image\(s\), too few for the splits"):
        images_prepare.prepare("shoes", cfg)
