"""Test kit: ground-truth clips and leak judges, imported by tests/ and bench/, never by the product.

truth.py   clips with a face box on every frame, rendered on demand from the annotated photos and the otb_girl
           sequence in ../shared/testdata
judges.py  did a face come out of the anonymizer? Pixels, identity (dlib) and the product's own detector
"""
