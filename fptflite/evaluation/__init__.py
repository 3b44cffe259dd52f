"""COCO keypoint evaluation: predictors, post-processing and COCOeval."""
