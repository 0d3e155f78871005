"""OpenCV helpers that work across OpenCV major versions."""
import cv2


def findContours(*args, **kwargs):
    """cv2.findContours returning (contours, hierarchy) on every OpenCV version.

    OpenCV 3 returns (image, contours, hierarchy); OpenCV 2, 4 and 5 return
    (contours, hierarchy). The result is told apart by its length, not by the version string.
    """
    result = cv2.findContours(*args, **kwargs)
    if len(result) == 3:
        _, contours, hierarchy = result
    else:
        contours, hierarchy = result
    return contours, hierarchy
