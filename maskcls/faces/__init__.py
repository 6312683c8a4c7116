"""Finding the face in a photo, and cropping it the same way in training, prediction and serving.

Rooms: `detect` (MTCNN, then OpenCV's Haar cascade, then a centre crop of the top part, each
result saying which one found it), `crop` (the square box with a margin) and `cache` (detections
stored by file content and detector settings, so a training set is detected once).
"""
from .cache import DetectionCache, face_boxes
from .crop import crop_face, square_box
from .detect import DETECTORS, DetectorSettings, Face, FaceDetector

__all__ = ["DETECTORS", "DetectionCache", "DetectorSettings", "Face", "FaceDetector", "crop_face", "face_boxes", "square_box"]
