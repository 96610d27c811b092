"""The student pipeline: teachers label images, a compact ONNX student learns from them, and the quality
factory adds the native-resolution crop view and the iqa head learnt from human scores.

    python -m export.student.distill all ...   label, train, export, quantise, measure, package (the one-view student)
    python -m export.student.quality all ...   crop features, iqa head, iaa calibration, export, package (the bundled model)
"""
