"""Reading photos: datasets (SIGNS HDF5 or image folders), decoding, and the one preprocessing path."""
