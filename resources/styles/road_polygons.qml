<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0-Firenze" styleCategories="Symbology">
  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">
    <symbols>
      <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="color" type="QString" value="255,127,0,90" />
            <Option name="style" type="QString" value="solid" />
            <Option name="outline_color" type="QString" value="255,127,0,255" />
            <Option name="outline_style" type="QString" value="solid" />
            <Option name="outline_width" type="QString" value="0.2" />
            <Option name="outline_width_unit" type="QString" value="MM" />
            <Option name="joinstyle" type="QString" value="bevel" />
          </Option>
          <prop k="color" v="255,127,0,90" />
          <prop k="style" v="solid" />
          <prop k="outline_color" v="255,127,0,255" />
          <prop k="outline_style" v="solid" />
          <prop k="outline_width" v="0.2" />
          <prop k="outline_width_unit" v="MM" />
          <prop k="joinstyle" v="bevel" />
        </layer>
      </symbol>
    </symbols>
  </renderer-v2>
  <layerGeometryType>2</layerGeometryType>
</qgis>
