"""Reading .tflite models safely, and running them on the host TFLM runtime in a child process."""
