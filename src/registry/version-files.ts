import { tf } from '../inference/backend.js';

/** Serializes a layers model into the converter's layers-model format: model.json + one shard. */
export async function modelToFiles(model: tf.LayersModel): Promise<Map<string, Buffer>> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  if (!artifacts?.weightData || !artifacts.weightSpecs) throw new Error('model serialization produced no weights');
  const shard = 'group1-shard1of1.bin';
  const weightData = artifacts.weightData;
  const bytes = Array.isArray(weightData)
    ? Buffer.concat(weightData.map((b) => Buffer.from(b)))
    : Buffer.from(weightData as ArrayBuffer);
  const modelJson = {
    format: 'layers-model',
    generatedBy: `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
    convertedBy: null,
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths: [shard], weights: artifacts.weightSpecs }],
  };
  return new Map([
    ['model.json', Buffer.from(JSON.stringify(modelJson))],
    [shard, bytes],
  ]);
}
