"""Image data: test-set readers, the dataset registry, preprocessing, augmentation, loaders, few-shot and partial labels."""
