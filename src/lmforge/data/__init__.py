"""Reading labelled data: classification tables, NER column files, label schemes and splits."""
