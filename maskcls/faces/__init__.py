"""Finding the face in a photo, and cropping it the same way in training, prediction and serving.

Rooms: `detect` (MTCNN, then OpenCV's Haar cascade, then a centre crop of the top part, each
result saying which one found it), `mtcnn` (MTCNN's cascade run by ONNX Runtime), `crop` (the square on the eyes or around the box, with a
margin), `cache` (detections stored by file content and detector settings, so a training set
is detected once) and `scene` (whether photos are scenes or faces: what preprocess.crop=auto decides on).
"""
from .cache import DetectionCache, face_boxes
from .crop import CROP_ALIGNS, align_face, crop_face, square_box
from .detect import DETECTORS, DetectorSettings, Face, FaceDetector

__all__ = ["CROP_ALIGNS", "DETECTORS", "DetectionCache", "DetectorSettings", "Face", "FaceDetector", "align_face", "crop_face", "face_boxes", "square_box"]
