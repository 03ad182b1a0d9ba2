"""The synthesis networks (HR-FCN, U-Nets), their weight files and the device they run on; shared by training and
inference."""
