"""The hand in a photo: the models' files (fetched, verified), the finder, the hand's geometry and the reading of
its landmarks."""
