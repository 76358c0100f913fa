"""The benchmark_model parser on genuine outputs of that tool, copied from public sources.

Samples (excerpts; table rows shortened where marked, text otherwise as published):
- OLD_OPS: NobuoTsukamoto/meta-tensorflow-lite, doc/tensorflow-lite-benchmark.md — benchmark_model
  built by the Yocto layer, mobilenet_v1_1.0_224 on qemuriscv64, --num_threads=4 --enable_op_profiling=true
  (tab-separated tables with a [start] column).
- ANDROID_CPU, ANDROID_OPS, ANDROID_FAILED: lp6m/yolov5s_android, benchmark/benchmark.md — benchmark_model
  from TensorFlow v2.4.0 on a Xiaomi Mi11 over adb (yolov5s, CPU and NNAPI runs; a failed NNAPI run).
- NEW_OPS: a public GitHub notes file ("benchmark", LiteRT linux_x86-64_benchmark_model on
  efficientdet-lite0 with --enable_op_profiling=true); newer format: "INFO:" prefixes, space-aligned
  tables without [start], XNNPACK node types with spaces. The index that served it did not record the
  repository name, so treat it as an unattributed sample of the newer format.
"""
from __future__ import annotations

import pytest

from edgekit.errors import DeviceError
from edgekit.runners.benchmark_model import BenchmarkOutputError, parse

T = "\t"
OLD_OPS = f"""STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [./mobilenet_v1_1.0_224.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
{T}             [node type]{T}          [start]{T}  [first]{T} [avg ms]{T}     [%]{T}  [cdf%]{T}  [mem KB]{T}[times called]{T}[Name]
{T}         AllocateTensors{T}            0.000{T}    1.356{T}    1.356{T}100.000%{T}100.000%{T}     0.000{T}        1{T}AllocateTensors/0

Number of nodes executed: 1
Timings (microseconds): count=1 curr=1356



Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
{T}             [node type]{T}          [start]{T}  [first]{T} [avg ms]{T}     [%]{T}  [cdf%]{T}  [mem KB]{T}[times called]{T}[Name]
{T}                 CONV_2D{T}            0.066{T}   87.754{T}   60.957{T}  2.066%{T}  2.066%{T}     0.000{T}        1{T}[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0
{T}       DEPTHWISE_CONV_2D{T}           61.033{T}   53.628{T}   49.870{T}  1.691%{T}  3.757%{T}     0.000{T}        1{T}[MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6]:1
{T}         AVERAGE_POOL_2D{T}         2936.930{T}    0.828{T}    0.869{T}  0.029%{T} 99.578%{T}     0.000{T}        1{T}[MobilenetV1/Logits/AvgPool_1a/AvgPool]:27
{T}                 SQUEEZE{T}         2949.993{T}    0.013{T}    0.017{T}  0.001%{T} 99.992%{T}     0.000{T}        1{T}[MobilenetV1/Logits/SpatialSqueeze]:29
{T}                 SOFTMAX{T}         2950.011{T}    0.230{T}    0.233{T}  0.008%{T}100.000%{T}     0.000{T}        1{T}[MobilenetV1/Predictions/Reshape_1]:30

============================== Top by Computation Time ==============================
{T}             [node type]{T}          [start]{T}  [first]{T} [avg ms]{T}     [%]{T}  [cdf%]{T}  [mem KB]{T}[times called]{T}[Name]
{T}                 CONV_2D{T}          898.426{T}  263.724{T}  277.374{T}  9.403%{T}  9.403%{T}     0.000{T}        1{T}[MobilenetV1/MobilenetV1/Conv2d_5_pointwise/Relu6]:10

Number of nodes executed: 31
============================== Summary by node type ==============================
{T}             [Node type]{T}  [count]{T}  [avg ms]{T}    [avg %]{T}    [cdf %]{T}  [mem KB]{T}[times called]
{T}                 CONV_2D{T}       15{T}  2651.853{T}    89.897%{T}    89.897%{T}     0.000{T}       15

Timings (microseconds): count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.9499e+06 std=109770
Memory (bytes): count=0
31 nodes observed
"""  # Run Order rows 2..26 and Top rows 2..10 left out

ANDROID_CPU = """count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""

ANDROID_OPS = f"""count=50 first=96719 curr=90158 min=89745 max=96719 avg=92571.2 std=1638
Inference timings in us: Init: 365972, First inference: 120877, Warmup (avg): 108605, Inference (avg): 92571.2
Peak memory footprint (MB): init=6.90625 overall=61.0547
Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
{T}             [node type]{T}          [start]{T}  [first]{T} [avg ms]{T}     [%]{T}  [cdf%]{T}  [mem KB]{T}[times called]{T}[Name]
{T}           STRIDED_SLICE{T}            0.021{T}    2.167{T}    2.118{T}  1.335%{T}  1.335%{T}     0.000{T}        1{T}[model/tf.strided_slice/StridedSlice]:0
{T}     TfLiteNnapiDelegate{T}            8.377{T}   78.701{T}   79.010{T} 49.781%{T} 55.042%{T}     0.000{T}        1{T}[model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, model/tf.nn.silu_35/mul]:231
{T} RESIZE_NEAREST_NEIGHBOR{T}           87.387{T}    0.254{T}    0.253{T}  0.160%{T} 55.201%{T}     0.000{T}        1{T}[model/lambda/resize/ResizeNearestNeighbor]:143

Number of nodes executed: 11
"""  # the timings lines of the fp16 run and the op table of the profiling run; table rows shortened

ANDROID_FAILED = """STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/yolov5s_int8_640.tflite]
#threads used for CPU inference: [4]
Use NNAPI: [1]
Loaded model /data/local/tmp/yolov5s_int8_640.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for NNAPI.
ERROR: NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 while completing NNAPI compilation.

ERROR: Node number 248 (TfLiteNnapiDelegate) failed to prepare.

ERROR: Restored original execution plan after delegate application failure.
Failed to apply NNAPI delegate.
Benchmarking failed.
"""

NEW_OPS = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [../tflite/efficientdet-tflite-lite0-detection-default-v1/1.tflite]
INFO: Signature to run: []
INFO: Enable op profiling: [1]
INFO: Loaded model ../tflite/efficientdet-tflite-lite0-detection-default-v1/1.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 4.56118
INFO: Initialized session in 32.163ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=32 first=19834 curr=15648 min=14936 max=21608 avg=15997.4 std=1663

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=64 first=16067 curr=15102 min=14661 max=17579 avg=15517.6 std=551

INFO: Inference timings in us: Init: 32163, First inference: 19834, Warmup (avg): 15997.4, Inference (avg): 15517.6
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=22.0273 overall=34.8281
INFO: Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
                                     [node type]          [first]        [avg ms]            [%]          [cdf%]          [mem KB]        [times called]  [Name]
                         ModifyGraphWithDelegate            6.348           6.348        55.640%         55.640%          7148.000                1       ModifyGraphWithDelegate/0
                                 AllocateTensors            5.061           5.061        44.360%        100.000%         10292.000                1       AllocateTensors/0

Number of nodes executed: 2
Timings (microseconds): count=1 curr=11409
Memory (bytes): count=0
2 nodes observed



INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
                                     [node type]          [first]        [avg ms]            [%]          [cdf%]          [mem KB]        [times called]  [Name]
                                        QUANTIZE            0.199           0.203         1.328%          1.328%             0.000                1       [tfl.quantize]:0
                   Convolution (NHWC, QC8) IGEMM            0.398           0.407         2.658%          3.986%             0.000                1       Delegate/Convolution (NHWC, QC8) IGEMM:0
                  Convolution (NHWC, QC8) DWConv            0.428           0.051         4.317%          8.304%             0.000               13       Delegate/Convolution (NHWC, QC8) DWConv:1
                                   Add (ND, QS8)            0.024           0.024         0.156%         22.580%             0.000                1       Delegate/Add (ND, QS8):9

Number of nodes executed: 4
"""  # Run Order rows shortened; "Number of nodes executed" set to the rows kept


def test_old_format_with_op_profiling():
    r = parse(OLD_OPS, expect_ops=True)
    assert (r.init_us, r.first_inference_us, r.warmup_avg_us, r.inference_avg_us) == \
        (17187, 3512391, 3.51239e6, 2.95034e6)
    assert r.runs == 50
    assert r.stats_us == {"first": 2990275, "min": 2727568, "max": 3189954, "avg": 2.95034e6, "std": 109798}
    assert (r.memory_init_mb, r.memory_overall_mb) == (4.21094, 46.0859)
    # the per-op rows come from the regular runs, not the initialization table
    assert [op["type"] for op in r.per_op] == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SQUEEZE",
                                               "SOFTMAX"]
    first = r.per_op[0]
    assert first["name"] == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"
    assert (first["first_ms"], first["avg_ms"], first["percent"], first["times_called"]) == \
        (87.754, 60.957, 2.066, 1)
    assert r.nodes_executed == 31


def test_android_cpu_run_without_profiling():
    r = parse(ANDROID_CPU)
    assert r.inference_avg_us == 249684 and r.first_inference_us == 360262
    assert r.stats_us["min"] == 247067 and r.stats_us["std"] == 1442 and r.runs == 50
    assert (r.memory_init_mb, r.memory_overall_mb) == (4.92969, 138.809)
    assert r.per_op is None


def test_android_op_table_with_delegate_nodes_and_commas_in_names():
    r = parse(ANDROID_OPS, expect_ops=True)
    assert r.inference_avg_us == 92571.2
    delegate = r.per_op[1]
    assert delegate["type"] == "TfLiteNnapiDelegate"
    assert delegate["name"] == "[model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, model/tf.nn.silu_35/mul]:231"
    assert delegate["avg_ms"] == 79.010 and delegate["cdf_percent"] == 55.042


def test_new_format_info_prefix_and_spaces_in_node_types():
    r = parse(NEW_OPS, expect_ops=True)
    assert r.inference_avg_us == 15517.6 and r.init_us == 32163
    assert r.runs == 64 and r.stats_us["max"] == 17579       # the regular runs, not the warm-up line
    assert (r.memory_init_mb, r.memory_overall_mb) == (22.0273, 34.8281)
    types = [op["type"] for op in r.per_op]
    assert types == ["QUANTIZE", "Convolution (NHWC, QC8) IGEMM", "Convolution (NHWC, QC8) DWConv", "Add (ND, QS8)"]
    dw = r.per_op[2]
    assert dw["times_called"] == 13 and dw["avg_ms"] == 0.051 and dw["name"] == "Delegate/Convolution (NHWC, QC8) DWConv:1"


def test_failed_run_is_one_clear_error():
    with pytest.raises(BenchmarkOutputError, match="failed on the device: .*ANEURALNETWORKS_OP_FAILED") as err:
        parse(ANDROID_FAILED)
    assert isinstance(err.value, DeviceError) and err.value.exit_code == 9


@pytest.mark.parametrize("cut", ["Inference timings in us", "Inference (avg)"])
def test_truncated_before_the_timings_line_reports_nothing(cut):
    text = OLD_OPS[:OLD_OPS.index(cut) + len(cut) - 3]
    with pytest.raises(BenchmarkOutputError, match="no 'Inference timings in us' line"):
        parse(text)


def test_truncated_op_table_is_refused():
    cut = OLD_OPS.index("SQUEEZE")
    with pytest.raises(BenchmarkOutputError, match="cut off"):
        parse(OLD_OPS[:cut], expect_ops=True)


def test_op_profiling_requested_but_absent():
    with pytest.raises(BenchmarkOutputError, match="no per-op table"):
        parse(ANDROID_CPU, expect_ops=True)


def test_unknown_version_timings_line():
    changed = ANDROID_CPU.replace("Inference timings in us: Init:", "Inference timings (us): Initialization:")
    with pytest.raises(BenchmarkOutputError, match="version edgekit does not know|no 'Inference timings"):
        parse(changed)


def test_unknown_op_row_layout_is_refused():
    broken = OLD_OPS.replace(f"{T}            0.066{T}   87.754", f"{T}            0.066{T}   n/a")
    with pytest.raises(BenchmarkOutputError, match="row not understood"):
        parse(broken, expect_ops=True)
