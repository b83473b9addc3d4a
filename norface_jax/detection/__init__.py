"""Face detection in whole pictures: MTCNN boxes and 5-point landmarks (`mtcnn.py`),
and crops of the faces found aligned like the prepared datasets' (`crops.py`)."""
