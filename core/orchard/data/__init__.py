"""Framework-neutral datasets and partitioning (NumPy and the standard library only).

Import from the modules, which keeps ``import orchard`` light:

* :mod:`orchard.data.partition` -- IID, shard and Dirichlet splits among
  clients, ``PartitionSpec`` and ``train_val_split``;
* :mod:`orchard.data.mnist` -- MNIST and Fashion-MNIST (``load_mnist``);
* :mod:`orchard.data.cifar10` -- CIFAR-10 from its binary archive (``load_cifar10``);
* :mod:`orchard.data.idx` -- the IDX file format (``read_idx``, ``write_idx``);
* :mod:`orchard.data.download` -- checksummed, atomic, mirror-aware downloads (``fetch``);
* :mod:`orchard.data.client_data` -- one client's share as arrays: dataset settings,
  ``load_split`` and the partition's train/val/test splits (``ClientDataset``);
* :mod:`orchard.data.errors` -- ``DatasetError``;
* :mod:`orchard.data.synth` -- synthetic files in the official formats, marked as such;
* :mod:`orchard.data.tool` -- the ``orchard-data fetch|import|synth`` command.
"""
