"""The course exercises (examples/exercises/*.yaml), answered by hand.

Each expected value is worked out in the comments from the definitions, independently of the
analyzer: valid output size ``(in - k_eff) // s + 1``, TensorFlow 'same' output ``ceil(in / s)``,
conv parameters ``filters * (k_h * k_w * C_in + 1)``, receptive field
``rf += (k_eff - 1) * jump``, ``jump *= stride``, ``start += ((k_eff - 1)/2 - pad_left) * jump``.
"""

from __future__ import annotations

import pytest

from cnnlab.analysis import AnalysisError, analyze


def _rows(a):
    return [(r.output_shape, r.trainable_params, r.non_trainable_params, r.receptive_field) for r in a.layers]


def test_two_conv_layers(exercises):
    a = analyze(exercises / "two_conv_layers.yaml")
    # conv 3x3 valid on 32: 32 - 3 + 1 = 30; params 16 * (3*3*3 + 1) = 16 * 28 = 448; rf 3
    # conv 3x3 valid on 30: 28; params 32 * (3*3*16 + 1) = 32 * 145 = 4640; rf 3 + 2*1 = 5
    assert _rows(a) == [((16, 30, 30), 448, 0, (3, 3)), ((32, 28, 28), 4640, 0, (5, 5))]
    assert a.totals["total_params"] == 448 + 4640 == 5088
    # MACs: 30*30 positions * 16 filters * 27 taps = 388,800; 28*28 * 32 * 144 = 3,612,672
    assert [r.macs for r in a.layers] == [388_800, 3_612_672]
    # start: valid 3x3 conv centres unit 0 on pixel 1, then pixel 2
    assert [r.start for r in a.layers] == [(1, 1), (2, 2)]


def test_two_locally_connected_layers(exercises):
    a = analyze(exercises / "two_locally_connected_layers.yaml")
    # Same shapes as the conv case, but one kernel AND one bias per output location:
    # layer 1: 30*30 locations * 16 filters * (3*3*3 + 1) = 900 * 16 * 28 = 403,200
    # layer 2: 28*28 locations * 32 filters * (3*3*16 + 1) = 784 * 32 * 145 = 3,637,760
    # (the wrong answer "448 and 4,640" forgets that weights are not shared)
    assert _rows(a) == [((16, 30, 30), 403_200, 0, (3, 3)), ((32, 28, 28), 3_637_760, 0, (5, 5))]
    assert a.totals["trainable_params"] == 4_040_960
    # the multiply-adds are those of the convolution: sharing changes memory, not arithmetic
    assert [r.macs for r in a.layers] == [388_800, 3_612_672]


def test_dense_batchnorm(exercises):
    a = analyze(exercises / "dense_batchnorm.yaml")
    # Dense 10 -> 20: 20 * 10 weights + 20 biases = 220 trainable
    # BatchNormalization(20): gamma, beta trainable (40); moving mean, variance not (40)
    assert _rows(a) == [((20,), 220, 0, None), ((20,), 40, 40, None)]
    t = a.totals
    assert (t["total_params"], t["trainable_params"], t["non_trainable_params"]) == (300, 260, 40)
    assert t["receptive_field"] is None  # a flat input has no spatial receptive field


def test_grayscale_128(exercises):
    a = analyze(exercises / "grayscale_128.yaml")
    # CONV9-32 valid: 128 - 9 + 1 = 120, params 32 * (81 + 1) = 2,624, rf 9 j 1
    # POOL2: 60, rf 9 + 1*1 = 10, j 2
    # CONV5-64: 60 - 4 = 56, params 64 * (25*32 + 1) = 51,264, rf 10 + 4*2 = 18
    # POOL2: 28, rf 18 + 1*2 = 20, j 4
    # CONV5-64: 28 - 4 = 24, params 64 * (25*64 + 1) = 102,464, rf 20 + 4*4 = 36
    # POOL2: 12, rf 36 + 1*4 = 40, j 8
    # Flatten: 64*12*12 = 9,216 (each element still sees 40x40)
    # FC-3: 3 * (9,216 + 1) = 27,651; it sees all 12 positions: 40 + 11*8 = 128 = the image
    assert _rows(a) == [
        ((32, 120, 120), 2_624, 0, (9, 9)),
        ((32, 60, 60), 0, 0, (10, 10)),
        ((64, 56, 56), 51_264, 0, (18, 18)),
        ((64, 28, 28), 0, 0, (20, 20)),
        ((64, 24, 24), 102_464, 0, (36, 36)),
        ((64, 12, 12), 0, 0, (40, 40)),
        ((9_216,), 0, 0, (40, 40)),
        ((3,), 27_651, 0, (128, 128)),
    ]
    assert a.totals["total_params"] == 2_624 + 51_264 + 102_464 + 27_651 == 184_003
    # the dense unit is centred on the image centre (127 / 2)
    assert a.layers[-1].start == (63.5, 63.5)


def test_inception_resnet_a(exercises):
    a = analyze(exercises / "inception_resnet_a.yaml")
    by = {r.name: r for r in a.layers}
    # 1x1 convs on 3 channels: 32 * (3 + 1) = 128; 3x3 on 32 channels: 32 * (9*32 + 1) = 9,248
    # 'same' keeps 35x35; concat 32 + 32 + 32 = 96 channels; project 256 * (96 + 1) = 24,832
    assert by["b0_1x1"].trainable_params == by["b1_1x1"].trainable_params == 128
    assert by["b1_3x3"].trainable_params == by["b2_3x3b"].trainable_params == 9_248
    assert by["concat"].output_shape == (96, 35, 35)
    assert by["project"].output_shape == (256, 35, 35)
    assert by["project"].trainable_params == 24_832
    assert a.totals["total_params"] == 3 * 128 + 3 * 9_248 + 24_832 == 52_960
    # receptive fields: branch 0 sees 1, branch 1 sees 3, branch 2 two 3x3s: 5; the concat
    # takes the largest (all branches are centred alike: 'same' 3x3 pads 1 on each side)
    assert [by[n].receptive_field for n in ("b0_1x1", "b1_3x3", "b2_3x3b", "concat", "project")] == [
        (1, 1), (3, 3), (5, 5), (5, 5), (5, 5)]
    assert by["concat"].inputs == ["b0_1x1", "b1_3x3", "b2_3x3b"]
    assert not a.warnings


def test_dilated_stack_stops_at_the_impossible_layer(exercises):
    # conv 3x3 same on 256: 256; rf 3, start 0 (pad 1 = (3-1)/2)
    # conv k5 d2 (k_eff 2*4+1 = 9) s2 valid: (256 - 9)//2 + 1 = 124; rf 3 + 8 = 11, j 2, start 4
    # pool 2: 62; rf 11 + 1*2 = 13, j 4, start 4 + 0.5*2 = 5
    # conv 3x3 same: 62; rf 13 + 2*4 = 21
    # conv k5 d4 (k_eff 17) s2 valid: (62 - 17)//2 + 1 = 23; rf 21 + 16*4 = 85, j 8, start 5 + 8*4 = 37
    # pool 2: 11; rf 85 + 8 = 93, j 16, start 41
    # conv 3x3 same: 11; rf 93 + 2*16 = 125
    # conv k5 d8: k_eff 8*4 + 1 = 33 > 11: impossible (valid padding adds nothing)
    with pytest.raises(AnalysisError) as info:
        analyze(exercises / "dilated_stack.yaml")
    message = str(info.value)
    assert message == ("layer 'conv2d_5' (Conv2D) on input (256, 11, 11): effective kernel 33 "
                       "(kernel 5, dilation 8) is larger than the input height 11")
    partial = info.value.partial
    assert [r.output_shape for r in partial.layers] == [
        (64, 256, 256), (32, 124, 124), (32, 62, 62), (128, 62, 62), (64, 23, 23), (64, 11, 11),
        (256, 11, 11)]
    assert [r.receptive_field[0] for r in partial.layers] == [3, 11, 13, 21, 85, 93, 125]
    assert [r.start[0] for r in partial.layers] == [0, 4, 5, 5, 37, 41, 41]
    assert [r.jump[0] for r in partial.layers] == [1, 2, 4, 4, 8, 16, 16]
    # params: 64*(27+1) = 1,792; 32*(25*64+1) = 51,232; 128*(9*32+1) = 36,992;
    # 64*(25*128+1) = 204,864; 256*(9*64+1) = 147,712
    assert [r.trainable_params for r in partial.layers if r.type == "Conv2D"] == [
        1_792, 51_232, 36_992, 204_864, 147_712]
    # Keras itself refuses strides > 1 with dilation > 1 (conv2d_1, conv2d_3): said, not hidden
    assert sum("Keras/TensorFlow reject strides > 1" in w for w in partial.warnings) == 2
    assert partial.error == message


def test_every_exercise_is_covered(exercises):
    tested = {"two_conv_layers", "two_locally_connected_layers", "dense_batchnorm",
              "grayscale_128", "inception_resnet_a", "dilated_stack"}
    assert {p.stem for p in exercises.glob("*.yaml")} == tested
