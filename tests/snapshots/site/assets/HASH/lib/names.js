// Readable names for the ids of the data: gene-set databases, baselines, kinds of edge. An unknown id is shown
// with its underscores as spaces.
const DATABASES = {
  GO_BP: "GO biological process", KEGG: "KEGG pathways", Reactome: "Reactome pathways", Hallmark: "MSigDB hallmarks",
  TRRUST: "TRRUST TF targets", "TRRUST edges": "TRRUST links among top genes", "STRING edges": "STRING links among top genes",
  STRING_edges: "STRING links among top genes", TRRUST_edges: "TRRUST links among top genes", TRRUST_TF_enrichment: "TRRUST TF list",
};
export const dbName = (db) => DATABASES[db] || String(db || "database not recorded").replace(/_/g, " ");

const BASELINES = {
  random_genes: "random gene lists", random_dictionary: "untrained SAE (its random start)", random_dictionary_2: "untrained SAE (another seed)",
  random_init_model: "untrained foundation model", pca: "principal directions", coexpression: "co-expressed gene groups",
  within_gene_shuffle: "firing shuffled within each gene", random_direction: "random directions",
};
export const baselineName = (b) => (b ? BASELINES[b] || b.replace(/_/g, " ") : "chance");
export const BASELINE_ORDER = Object.keys(BASELINES);

const KINDS = { cross_layer_pmi: "co-firing (PMI)", cross_layer: "co-firing beyond gene identity", decoder_cosine: "decoder cosine" };
export const kindName = (k) => KINDS[k] || String(k).replace(/_/g, " ");

// Why an SAE's training stopped (manifest sae.training[L].stopped: "converged: 5 measurements without a 0.001
// relative gain", "cap: 3 epoch(s)"), in words.
export function stopName(s) {
  if (!s) return "not recorded";
  const m = /^(converged|cap): (.*)$/.exec(s);
  return m ? (m[1] === "converged" ? `converged (${m[2]})` : `reached its cap (${m[2]})`) : s;
}
