"""SAM-CLIP service: Segment Anything + OpenCLIP behind the VisionModelService contract.

SAM-CLIP (Apple, arXiv:2310.15308) merges SAM and CLIP into one backbone; its
weights are not released. This service gives the same tasks by composing
segment-anything with open_clip (`ComposedSamOpenClip`) behind the
`SamClipBackend` interface, and says so in its Capabilities.

Nothing heavy is imported here: `visioncompare.samclip.weights` must stay cheap for
`fetch-weights`.
"""
