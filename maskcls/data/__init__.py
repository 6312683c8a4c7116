"""Data: the competition layout, label fixes, person-grouped splits, transforms, datasets, demo data."""
