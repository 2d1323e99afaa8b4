import os

from collabopt import quiet


def test_native_stderr_drops_tensorflow_noise_and_keeps_the_rest(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "VERBOSE", False)
    with quiet.native_stderr_silenced():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1795529168.703559   10758 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 00:00:1795532839.065055   20121 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
        os.write(2, b"a real problem\n")
    err = capfd.readouterr().err
    assert err == "a real problem\n"


def test_verbose_lets_everything_through(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "VERBOSE", True)
    with quiet.native_stderr_silenced():
        os.write(2, b"fully_quantize: 0\n")
    assert "fully_quantize" in capfd.readouterr().err
