"""What the shapes models know: the scene classes and the triangle's keypoints."""

CLASSES = ("circle", "square", "triangle", "star", "cross")
# Triangle corners as keypoints, in a canonical order: the topmost corner (smallest y), then
# the others clockwise on screen. Equilateral triangles have no natural first corner, so the
# order flips where two corners are level; an order-free corner error is measured as well.
TRIANGLE_KEYPOINTS = ("corner_1", "corner_2", "corner_3")
